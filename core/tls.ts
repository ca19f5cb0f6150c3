/**
 * The cluster's certificates: one CA per stack, one certificate per node (server and client at
 * once: etcd peers, Patroni and the membership scripts present it), and, for the local runner, one
 * operator certificate for this machine's own clients (the status probes, the tests).
 *
 * This is the plan both generators follow: on Hetzner the Pulumi program declares @pulumi/tls
 * resources from it (components/clusterCertificates.ts), locally the runner calls openssl with it
 * (local/tls.ts). Same algorithm, subjects, SANs, usages and lifetimes either way.
 */
import { ConfigError } from "./errors";
import { NODE_EXPORTER_TEXTFILE_DIR } from "./paths";
import type { NodeSpec, Topology } from "./topology";

/** ECDSA P-256: small keys and certificates (user data is capped at 32 KiB), supported by every daemon. */
export const TLS_KEY = { algorithm: "ECDSA", ecdsaCurve: "P256", opensslCurve: "prime256v1" } as const;

/** The CA lives 10 years: replacing it means a new certificate on every node at once (README, Rotation). */
export const CA_VALIDITY_HOURS = 10 * 365 * 24;
/** Node certificates live 2 years, and are renewed by a `pulumi up` in their last 30 days. */
export const NODE_VALIDITY_HOURS = 2 * 365 * 24;
export const NODE_EARLY_RENEWAL_HOURS = 30 * 24;

/**
 * Certificate ends, for node exporter's textfile collector: `madbase-tls-metrics` (on every node, by
 * its timer and after config-refresh installs a renewed certificate) writes each certificate's
 * notAfter here, and the alert rules (core/alerts.ts) warn before one ends.
 */
export const TLS_METRICS_FILE = `${NODE_EXPORTER_TEXTFILE_DIR}/madbase-tls.prom`;
/** Often enough that an alert follows a renewal within minutes; each run is two `openssl x509`. */
export const TLS_METRICS_INTERVAL_SECONDS = 900;
/** The metrics that file holds (templates/scripts/tls-metrics.sh writes them; the tests hold both to these names). */
export const TLS_METRICS = {
  notAfter: "madbase_tls_certificate_not_after_timestamp_seconds",
  readable: "madbase_tls_certificate_readable",
  collected: "madbase_tls_metrics_timestamp_seconds",
} as const;
/** The certificates every node reports, by the `certificate` label: the CA's and its own. */
export const TLS_METRICS_CERTIFICATES = ["ca", "node"] as const;
/**
 * When the node certificate's alert warns: a `pulumi up` renews it in its last
 * NODE_EARLY_RENEWAL_HOURS (30 days), so 21 days left means nobody ran one for 9 days of that
 * window. The CA is not renewed in place (README, Rotation): a new stack takes planning, so months.
 */
export const NODE_CERT_ALERT_DAYS = 21;
export const CA_CERT_ALERT_DAYS = 180;
/** Any certificate this close to its end is an emergency: past it etcd, Patroni, PostgreSQL and HAProxy refuse it. */
export const CERT_CRITICAL_DAYS = 7;

/** Key usages, by @pulumi/tls's names (`allowedUses`); TLS_USAGE_OPENSSL maps them for openssl. */
export type TlsUsage =
  "cert_signing" | "crl_signing" | "digital_signature" | "key_encipherment" | "server_auth" | "client_auth";
export const TLS_USAGE_OPENSSL: Record<TlsUsage, { ext: "keyUsage" | "extendedKeyUsage"; name: string }> = {
  cert_signing: { ext: "keyUsage", name: "keyCertSign" },
  crl_signing: { ext: "keyUsage", name: "cRLSign" },
  digital_signature: { ext: "keyUsage", name: "digitalSignature" },
  key_encipherment: { ext: "keyUsage", name: "keyEncipherment" },
  server_auth: { ext: "extendedKeyUsage", name: "serverAuth" },
  client_auth: { ext: "extendedKeyUsage", name: "clientAuth" },
};

export interface CertificateSpec {
  /** The Pulumi name suffix and the local file name. */
  id: string;
  commonName: string;
  organization: string;
  isCa: boolean;
  dnsNames: string[];
  ipAddresses: string[];
  usages: TlsUsage[];
  validityHours: number;
  /** @pulumi/tls replaces the certificate at the first `pulumi up` within this many hours of its end. */
  earlyRenewalHours: number;
}

export const TLS_ORGANIZATION = "MadBase State";

/**
 * What the printed database URLs ask for: TLS, which every client library does without extra
 * files. Clients that hold the CA (the caCertificate output) should use verify-full (README).
 */
export const DATABASE_URL_SSLMODE = "require";

/**
 * The name every node's certificate carries for the entry point (besides its address), so a client
 * can verify the server whichever node's HAProxy it reached: `sslmode=verify-full` with
 * `host=<this name> hostaddr=<entry address>`, or the name in the client's DNS or hosts file.
 */
export function entryPointName(topology: Pick<Topology, "clusterName">): string {
  return topology.clusterName;
}

export function caCertificateSpec(topology: Pick<Topology, "clusterName">): CertificateSpec {
  return {
    id: "ca",
    commonName: `${topology.clusterName} CA`,
    organization: TLS_ORGANIZATION,
    isCa: true,
    dnsNames: [],
    ipAddresses: [],
    usages: ["cert_signing", "crl_signing", "digital_signature"],
    validityHours: CA_VALIDITY_HOURS,
    earlyRenewalHours: 0,
  };
}

/**
 * A node's certificate. It depends only on the node and the stack, never on the node count, so a
 * scale never replaces the certificate of a node that stays. SANs: the node's name and private
 * address (etcd peers, Patroni, PostgreSQL), the entry point's name and address (clients through
 * HAProxy or the load balancer), and localhost (the node's own etcdctl and Patroni calls).
 */
export function nodeCertificateSpec(
  topology: Pick<Topology, "clusterName" | "loadBalancerIp">,
  node: NodeSpec,
): CertificateSpec {
  return {
    id: node.name,
    commonName: node.name,
    organization: TLS_ORGANIZATION,
    isCa: false,
    dnsNames: [node.name, entryPointName(topology), "localhost"],
    ipAddresses: [node.privateIp, topology.loadBalancerIp, "127.0.0.1"],
    usages: ["digital_signature", "key_encipherment", "server_auth", "client_auth"],
    validityHours: NODE_VALIDITY_HOURS,
    earlyRenewalHours: NODE_EARLY_RENEWAL_HOURS,
  };
}

/** A client-only certificate for an operator's machine (the local runner's probes and tests). */
export function operatorCertificateSpec(topology: Pick<Topology, "clusterName">): CertificateSpec {
  return {
    id: "operator",
    commonName: `${topology.clusterName} operator`,
    organization: TLS_ORGANIZATION,
    isCa: false,
    dnsNames: [],
    ipAddresses: [],
    usages: ["digital_signature", "client_auth"],
    validityHours: NODE_VALIDITY_HOURS,
    earlyRenewalHours: NODE_EARLY_RENEWAL_HOURS,
  };
}

export interface TlsKeyPair {
  cert: string;
  key: string;
}

/** The certificates the nodes carry: the CA's certificate (never its key) and each node's pair. */
export interface ClusterTls {
  caCert: string;
  nodes: Record<string, TlsKeyPair>;
}

const PEM_CERT = /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?$/;
const PEM_KEY = /^-----BEGIN (EC |)PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END (EC |)PRIVATE KEY-----\n?$/;

/** The pair a node's files are rendered with; an error names the node when it has none. */
export function nodeTls(tls: ClusterTls, node: NodeSpec): { caCert: string; cert: string; key: string } {
  if (!PEM_CERT.test(tls.caCert))
    throw new ConfigError("secrets.tls.caCert", "(not shown)", "a PEM certificate (-----BEGIN CERTIFICATE-----)");
  const pair = tls.nodes[node.name];
  if (!pair)
    throw new ConfigError(`secrets.tls.nodes.${node.name}`, "missing", "a certificate and key for every node rendered");
  if (!PEM_CERT.test(pair.cert))
    throw new ConfigError(`secrets.tls.nodes.${node.name}.cert`, "(not shown)", "a PEM certificate");
  // Never echo a key.
  if (!PEM_KEY.test(pair.key))
    throw new ConfigError(`secrets.tls.nodes.${node.name}.key`, "(hidden)", "a PEM private key");
  return { caCert: ensureNewline(tls.caCert), cert: ensureNewline(pair.cert), key: ensureNewline(pair.key) };
}

function ensureNewline(pem: string): string {
  return pem.endsWith("\n") ? pem : `${pem}\n`;
}

/**
 * Stand-ins of the real sizes (a P-256 certificate with these SANs and its CA's key identifier is
 * ~770 bytes of PEM, the CA's ~640, a key ~240) for `npm run render` and the user-data size check,
 * which have no Pulumi state.
 */
export function placeholderTls(nodeNames: readonly string[]): ClusterTls {
  const pem = (label: string, what: string, bytes: number) => {
    const body = Buffer.alloc(bytes, `PLACEHOLDER-${what}-not-a-real-one-`).toString("base64");
    return `-----BEGIN ${label}-----\n${body.replace(/(.{64})/g, "$1\n").replace(/\n$/, "")}\n-----END ${label}-----\n`;
  };
  return {
    caCert: pem("CERTIFICATE", "ca", 429),
    nodes: Object.fromEntries(
      nodeNames.map((n) => [n, { cert: pem("CERTIFICATE", n, 528), key: pem("PRIVATE KEY", n, 138) }]),
    ),
  };
}

/** Replaces every PEM document in `text` with `<pem:LABEL>`: snapshots and logs of files that carry keys. */
export function maskPem(text: string): string {
  return text.replace(
    /-----BEGIN ([A-Z ]+)-----\s[A-Za-z0-9+/=\s]+?-----END \1-----/g,
    (_, label: string) => `<pem:${label}>`,
  );
}
