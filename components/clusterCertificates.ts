import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import {
  CertificateSpec,
  ClusterTls,
  TLS_KEY,
  Topology,
  caCertificateSpec,
  nodeCertificateSpec,
  operatorCertificateSpec,
} from "../core";

export interface ClusterCertificatesArgs {
  topology: Topology;
  /**
   * Protect the CA's key and certificate: a new CA would leave every running node trusting the old
   * one (their files change only through config-refresh), so etcd peers and clients would disagree.
   */
  protect: boolean;
}

function subject(spec: CertificateSpec) {
  return { commonName: spec.commonName, organization: spec.organization };
}

/**
 * The cluster's CA, one certificate per node and the operator's client certificate, from the plan in core/tls.ts (the local runner
 * makes the same with openssl). Every input of a node's certificate depends on the node and the
 * stack only, so `pulumi up` keeps each certificate until it is due for renewal
 * (earlyRenewalHours); the private keys are secrets in the state and in every output they reach.
 */
export class ClusterCertificates extends pulumi.ComponentResource {
  /** The CA's certificate, public: the `caCertificate` output clients verify the servers with. */
  readonly caCertPem: pulumi.Output<string>;
  /** The CA's certificate and every node's pair, as one secret value for the render core. */
  readonly values: pulumi.Output<ClusterTls>;
  /** The operator's client certificate (public) and its key (secret): Prometheus's and an operator's curl's to Patroni. */
  readonly operatorCertPem: pulumi.Output<string>;
  readonly operatorKeyPem: pulumi.Output<string>;

  constructor(name: string, args: ClusterCertificatesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:ClusterCertificates", name, {}, opts);
    const key = (id: string, protect: boolean) =>
      new tls.PrivateKey(
        `${name}-${id}-key`,
        { algorithm: TLS_KEY.algorithm, ecdsaCurve: TLS_KEY.ecdsaCurve },
        { parent: this, protect },
      );

    const caSpec = caCertificateSpec(args.topology);
    const caKey = key(caSpec.id, args.protect);
    const ca = new tls.SelfSignedCert(
      `${name}-ca`,
      {
        privateKeyPem: caKey.privateKeyPem,
        subject: subject(caSpec),
        isCaCertificate: true,
        validityPeriodHours: caSpec.validityHours,
        earlyRenewalHours: caSpec.earlyRenewalHours,
        allowedUses: caSpec.usages,
      },
      { parent: this, protect: args.protect },
    );
    this.caCertPem = ca.certPem;

    // A pair signed by the CA: a key (as stateful as what uses it: replaced, it would stop matching
    // the files made with it), its request and the certificate.
    const signedPair = (spec: CertificateSpec) => {
      const pairKey = key(spec.id, args.protect);
      const request = new tls.CertRequest(
        `${name}-${spec.id}-csr`,
        {
          privateKeyPem: pairKey.privateKeyPem,
          subject: subject(spec),
          dnsNames: spec.dnsNames,
          ipAddresses: spec.ipAddresses,
        },
        { parent: this },
      );
      const cert = new tls.LocallySignedCert(
        `${name}-${spec.id}-cert`,
        {
          certRequestPem: request.certRequestPem,
          caPrivateKeyPem: caKey.privateKeyPem,
          caCertPem: ca.certPem,
          validityPeriodHours: spec.validityHours,
          earlyRenewalHours: spec.earlyRenewalHours,
          allowedUses: spec.usages,
        },
        { parent: this },
      );
      return { cert: cert.certPem, key: pairKey.privateKeyPem };
    };

    const nodes = args.topology.nodes.map((node) => {
      const pair = signedPair(nodeCertificateSpec(args.topology, node));
      return [node.name, pulumi.all([pair.cert, pair.key])] as const;
    });
    // The operator's client pair: what Prometheus and an operator's curl present to Patroni's REST
    // API, which answers only callers with a certificate of this CA.
    const operator = signedPair(operatorCertificateSpec(args.topology));
    this.operatorCertPem = operator.cert;
    this.operatorKeyPem = pulumi.secret(operator.key);

    const pairs = pulumi.all(nodes.map(([, pair]) => pair));
    this.values = pulumi.secret(
      pulumi.all([ca.certPem, pairs]).apply(([caCert, all]): ClusterTls => ({
        caCert,
        nodes: Object.fromEntries(all.map(([cert, k], i) => [nodes[i][0], { cert, key: k }])),
      })),
    );
    this.registerOutputs({ caCertificate: this.caCertPem });
  }
}
