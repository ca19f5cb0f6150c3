/**
 * When Patroni starts asking for client certificates: at once on a new stack, and on a stack from
 * before it only in the update after the one that gave every HAProxy and script the node's pair.
 */
import {
  appliedSettings,
  describeCluster,
  parseSettings,
  patroniClientCertificates,
  readAppliedSettings,
  renderNode,
  serverPaths,
} from "../../core";
import { fixtureTls, randomSecrets } from "../support/fixtures";

const settings = parseSettings("prod", { nodeCount: 3 });
const recorded = (mode?: "required" | "prepared") => {
  const record = appliedSettings(settings, { sshPrivateKeySet: true, patroniClientCertificates: mode });
  if (mode === undefined) delete record.patroniClientCertificates;
  return readAppliedSettings(JSON.parse(JSON.stringify(record))).previous!;
};

test("a new stack requires them at once, and says nothing", () => {
  expect(patroniClientCertificates(undefined)).toEqual({ mode: "required", warnings: [] });
});

test("a stack whose record predates the field prepares first and says to run pulumi up again", () => {
  const previous = recorded(undefined);
  expect(previous).toBeDefined();
  const decision = patroniClientCertificates(previous);
  expect(decision.mode).toBe("prepared");
  expect(decision.warnings).toEqual([
    expect.stringMatching(/next `pulumi up` turns the requirement on.*Run `pulumi up` again/),
  ]);
});

test("after a prepared update, and after a required one, the next requires", () => {
  expect(patroniClientCertificates(recorded("prepared")).mode).toBe("required");
  expect(patroniClientCertificates(recorded("required")).mode).toBe("required");
});

test("prepared: Patroni does not ask, while HAProxy and the scripts already present the node's pair; required: it asks", () => {
  const { topology, options } = describeCluster(settings);
  const node = topology.nodes[1];
  const [secrets, tls] = [randomSecrets(), fixtureTls(topology.stack, topology.subnetCidr)];
  const render = (mode: "required" | "prepared") =>
    renderNode({
      topology,
      node,
      options: { ...options, patroniClientCertificates: mode },
      secrets,
      tls,
      paths: serverPaths(),
    });
  const prepared = render("prepared");
  const required = render("required");
  expect(prepared["patroni.yml"]).not.toMatch(/verify_client/);
  expect(required["patroni.yml"]).toMatch(/^ {2}verify_client: required$/m);
  for (const files of [prepared, required]) {
    const checks = files["haproxy.cfg"].split("\n").filter((l) => /default-server port 8008 check-ssl/.test(l));
    // 5433 and 5434 check; 5435's servers track 5433's checks.
    expect(checks).toHaveLength(2);
    for (const line of checks) expect(line).toMatch(/verify required ca-file \S+ crt "@node\/node"$/);
  }
  // Everything else is the same: the one step between them is Patroni's own setting.
  const { ["patroni.yml"]: a, ["user-data.yaml"]: ua, ...restPrepared } = prepared;
  const { ["patroni.yml"]: b, ["user-data.yaml"]: ub, ...restRequired } = required;
  expect([a === b, ua === ub]).toEqual([false, false]);
  expect(restPrepared).toEqual({ ...restRequired });
});
