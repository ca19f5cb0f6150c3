/**
 * The local cluster's certificates, made with openssl from the same plan the Pulumi program's
 * @pulumi/tls resources follow (core/tls.ts): ECDSA P-256, the same subjects, SANs, usages and
 * lifetimes. Keys are written to 0600 files and reach openssl as file names, never on a command
 * line. They live in `<root>/tls/`: the CA (its key never leaves this machine), one pair per node
 * and the operator's client pair that this machine's probes and the tests present.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as https from "node:https";
import * as path from "node:path";
import {
  CertificateSpec,
  ClusterTls,
  TLS_KEY,
  TLS_USAGE_OPENSSL,
  Topology,
  caCertificateSpec,
  nodeCertificateSpec,
  operatorCertificateSpec,
} from "../core";

export const TLS_DIR = "tls";

/** Where a certificate and its key are under a cluster's root. */
export function certPaths(root: string, id: string): { cert: string; key: string } {
  const dir = path.join(root, TLS_DIR);
  return { cert: path.join(dir, `${id}.crt`), key: path.join(dir, `${id}.key`) };
}

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** The openssl extension section for a plan's certificate. */
export function opensslExtensions(spec: CertificateSpec): string {
  const usage = (ext: "keyUsage" | "extendedKeyUsage") =>
    spec.usages.filter((u) => TLS_USAGE_OPENSSL[u].ext === ext).map((u) => TLS_USAGE_OPENSSL[u].name);
  const lines = [
    `basicConstraints = critical, CA:${spec.isCa ? "TRUE" : "FALSE"}`,
    `keyUsage = critical, ${usage("keyUsage").join(", ")}`,
    // The key identifiers @pulumi/tls writes: the provider gives a CA a subject key identifier, and
    // Go's x509 copies it into every certificate the CA signs as the authority key identifier;
    // neither otherwise. Python 3.13's default contexts (VERIFY_X509_STRICT; Patroni's REST
    // server builds one) refuse a chain without them: "Missing Authority Key Identifier".
    `subjectKeyIdentifier = ${spec.isCa ? "hash" : "none"}`,
    `authorityKeyIdentifier = ${spec.isCa ? "none" : "keyid:always"}`,
  ];
  const eku = usage("extendedKeyUsage");
  if (eku.length > 0) lines.push(`extendedKeyUsage = ${eku.join(", ")}`);
  const sans = [...spec.dnsNames.map((d) => `DNS:${d}`), ...spec.ipAddresses.map((ip) => `IP:${ip}`)];
  if (sans.length > 0) lines.push(`subjectAltName = ${sans.join(", ")}`);
  return lines.join("\n") + "\n";
}

/**
 * Makes one key and certificate from the plan, signed by `signer` (or self-signed: the CA). The
 * validity is the plan's, in whole days (openssl counts days; the plan's are multiples of 24 h).
 */
export function issueCertificate(
  spec: CertificateSpec,
  out: { cert: string; key: string },
  signer?: { cert: string; key: string },
): void {
  fs.mkdirSync(path.dirname(out.cert), { recursive: true, mode: 0o700 });
  const work = fs.mkdtempSync(path.join(path.dirname(out.cert), `.${spec.id}-`));
  try {
    const ext = path.join(work, "ext.cnf");
    fs.writeFileSync(ext, `[req]\ndistinguished_name = dn\n[dn]\n[v3]\n${opensslExtensions(spec)}`);
    const key = path.join(work, "key.pem");
    // The key file is created 0600 (umask of openssl's own creation may be wider: set it first).
    fs.writeFileSync(key, "", { mode: 0o600 });
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", `ec_paramgen_curve:${TLS_KEY.opensslCurve}`, "-out", key]);
    const subject = `/O=${spec.organization}/CN=${spec.commonName}`;
    const days = String(Math.ceil(spec.validityHours / 24));
    const cert = path.join(work, "cert.pem");
    if (!signer) {
      openssl([
        "req",
        "-new",
        "-x509",
        "-key",
        key,
        "-subj",
        subject,
        "-days",
        days,
        "-sha256",
        "-config",
        ext,
        "-extensions",
        "v3",
        "-out",
        cert,
      ]);
    } else {
      const csr = path.join(work, "req.csr");
      openssl(["req", "-new", "-key", key, "-subj", subject, "-config", ext, "-out", csr]);
      const serial = `0x${randomBytes(16).toString("hex")}`;
      openssl([
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        signer.cert,
        "-CAkey",
        signer.key,
        "-set_serial",
        serial,
        "-days",
        days,
        "-sha256",
        "-extfile",
        ext,
        "-extensions",
        "v3",
        "-out",
        cert,
      ]);
    }
    fs.renameSync(key, out.key);
    fs.renameSync(cert, out.cert);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The cluster's CA, a pair for each node of `topology` and the operator's pair, made once and kept
 * (a node's certificate never changes while it lives, as on Hetzner): a grown cluster gets pairs
 * for its new nodes only. Returns what the nodes are rendered with.
 */
export function ensureClusterTls(root: string, topology: Topology): ClusterTls {
  const ca = certPaths(root, "ca");
  if (!fs.existsSync(ca.cert)) issueCertificate(caCertificateSpec(topology), ca);
  const operator = certPaths(root, "operator");
  if (!fs.existsSync(operator.cert)) issueCertificate(operatorCertificateSpec(topology), operator, ca);
  for (const node of topology.nodes) {
    const own = certPaths(root, node.name);
    if (!fs.existsSync(own.cert)) issueCertificate(nodeCertificateSpec(topology, node), own, ca);
  }
  return readClusterTls(root);
}

/** Every pair made so far (a node that left keeps its files until `down`). */
export function readClusterTls(root: string): ClusterTls {
  const dir = path.join(root, TLS_DIR);
  const read = (f: string) => fs.readFileSync(path.join(dir, f), "utf8");
  const nodes: ClusterTls["nodes"] = {};
  for (const f of fs.readdirSync(dir)) {
    const id = f.replace(/\.crt$/, "");
    if (f.endsWith(".crt") && id !== "ca" && id !== "operator") nodes[id] = { cert: read(f), key: read(`${id}.key`) };
  }
  return { caCert: read("ca.crt"), nodes };
}

/** What this machine's clients present to the cluster: the CA to verify with and the operator's pair. */
export interface OperatorTls {
  caFile: string;
  certFile: string;
  keyFile: string;
  ca: string;
  cert: string;
  key: string;
}

export function operatorTls(root: string): OperatorTls {
  const ca = certPaths(root, "ca").cert;
  const own = certPaths(root, "operator");
  return {
    caFile: ca,
    certFile: own.cert,
    keyFile: own.key,
    ca: fs.readFileSync(ca, "utf8"),
    cert: fs.readFileSync(own.cert, "utf8"),
    key: fs.readFileSync(own.key, "utf8"),
  };
}

export interface TlsResponse {
  status: number;
  body: string;
}

/**
 * One HTTPS request that verifies the server with the cluster's CA and, given a pair, presents it
 * (etcd's client port takes only certificates its CA signed). `fetch` cannot take a CA per request,
 * so this uses https.request. Rejects on a TLS or network failure, and after `timeoutMs`.
 */
export function tlsRequest(
  url: string,
  opts: {
    ca: string;
    cert?: string;
    key?: string;
    method?: string;
    body?: string;
    headers?: Record<string, string>;
    timeoutMs?: number;
    servername?: string;
  },
): Promise<TlsResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: opts.method ?? "GET",
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        headers: opts.headers,
        servername: opts.servername,
        timeout: opts.timeoutMs ?? 3000,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${url}: no answer in ${opts.timeoutMs ?? 3000} ms`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}
