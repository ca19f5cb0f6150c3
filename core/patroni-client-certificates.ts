/**
 * Whether Patroni's REST API asks every caller for a certificate of the cluster CA
 * (`restapi.verify_client: required`): the nodes present their own pair (Patroni's member calls,
 * HAProxy's checks, the node scripts), the operator's tools the operator pair.
 *
 * A stack deployed before it needs two `pulumi up`s. Its HAProxys check Patroni without a
 * certificate until their node is refreshed; requiring one in that same rolling update would
 * make every HAProxy not yet refreshed see the refreshed nodes' Patroni as down, the leader's
 * included: no writes through those entry points until their turn. So the first update only
 * prepares (every HAProxy and script presents the node's pair, Patroni does not ask yet), records
 * that in appliedSettings, and says so; the next one requires, safely, because the update that
 * recorded "prepared" reached every node.
 */
export type PatroniClientCertificates = "required" | "prepared";

export interface PatroniClientCertificatesDecision {
  mode: PatroniClientCertificates;
  /** What `pulumi up` must say (pulumi.log.warn). */
  warnings: string[];
}

/**
 * `required` for a new stack and for one whose last update recorded either mode; `prepared` for
 * a stack whose last update was made before this setting existed (its record has no such field).
 */
export function patroniClientCertificates(
  // The field of the last update's appliedSettings (core/stack-change.ts), which imports this file.
  previous: { patroniClientCertificates?: PatroniClientCertificates } | undefined,
): PatroniClientCertificatesDecision {
  if (previous === undefined || previous.patroniClientCertificates !== undefined)
    return { mode: "required", warnings: [] };
  return {
    mode: "prepared",
    warnings: [
      "Patroni's REST API will ask every caller for a certificate of the cluster CA: this update gives every node's HAProxy checks and scripts " +
        "the node's certificate first, and the next `pulumi up` turns the requirement on (both one node at a time). Run `pulumi up` again after this one.",
    ],
  };
}
