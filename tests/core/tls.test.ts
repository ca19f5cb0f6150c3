/**
 * The certificate plan (core/tls.ts) both generators follow, the local generator's certificates
 * checked with openssl against it, and how certificates reach a node (user data, config-refresh).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as yaml from "js-yaml";
import {
  CA_CERT_ALERT_DAYS,
  CA_VALIDITY_HOURS,
  CERT_CRITICAL_DAYS,
  ConfigError,
  NODE_CERT_ALERT_DAYS,
  NODE_EARLY_RENEWAL_HOURS,
  NODE_VALIDITY_HOURS,
  buildTopology,
  caCertificateSpec,
  describeCluster,
  maskPem,
  nodeCertificateSpec,
  nodeTls,
  operatorCertificateSpec,
  parseSettings,
  placeholderTls,
  possibleNodeAddresses,
  refreshScript,
  serverPaths,
} from "../../core";
import { certPaths, ensureClusterTls, issueCertificate, opensslExtensions } from "../../local/tls";
import { fixtureTls, randomSecrets, renderStack } from "../support/fixtures";

const topo = (nodeCount: number) => buildTopology({ stack: "prod", nodeCount, subnetCidr: "10.42.1.0/24" });
const openssl = (args: string[], input?: string) => execFileSync("openssl", args, { encoding: "utf8", input });

describe("the plan", () => {
  it("names each node by its name and address, the entry point by its name and the load balancer's address, and loopback", () => {
    const three = topo(3);
    expect(nodeCertificateSpec(three, three.nodes[1])).toMatchObject({
      commonName: "madbase-prod-2",
      isCa: false,
      dnsNames: ["madbase-prod-2", "madbase-prod", "localhost"],
      ipAddresses: ["10.42.1.11", "10.42.1.5", "127.0.0.1"],
      usages: ["digital_signature", "key_encipherment", "server_auth", "client_auth"],
      validityHours: NODE_VALIDITY_HOURS,
    });
    expect(caCertificateSpec(three)).toMatchObject({
      isCa: true,
      usages: ["cert_signing", "crl_signing", "digital_signature"],
      validityHours: CA_VALIDITY_HOURS,
    });
    // The operator's pair only authenticates a client: no server name, no server use.
    expect(operatorCertificateSpec(three)).toMatchObject({
      dnsNames: [],
      ipAddresses: [],
      usages: ["digital_signature", "client_auth"],
    });
  });

  it("gives a node the same certificate whatever the node count, so a scale never replaces one", () => {
    const [one, three, seven] = [topo(1), topo(3), topo(7)];
    expect(nodeCertificateSpec(seven, seven.nodes[0])).toEqual(nodeCertificateSpec(one, one.nodes[0]));
    expect(nodeCertificateSpec(seven, seven.nodes[2])).toEqual(nodeCertificateSpec(three, three.nodes[2]));
    expect(caCertificateSpec(seven)).toEqual(caCertificateSpec(one));
  });

  it("refuses to render a node without its pair, naming it, and never echoes a key", () => {
    const three = topo(3);
    const tls = placeholderTls(["madbase-prod-1"]);
    expect(() => nodeTls(tls, three.nodes[1])).toThrow(ConfigError);
    expect(() => nodeTls(tls, three.nodes[1])).toThrow(/secrets\.tls\.nodes\.madbase-prod-2/);
    const broken = { ...tls, nodes: { "madbase-prod-1": { ...tls.nodes["madbase-prod-1"], key: "not a key at all" } } };
    expect(() => nodeTls(broken, three.nodes[0])).toThrow(/madbase-prod-1\.key.*hidden/);
    expect(() => nodeTls(broken, three.nodes[0])).not.toThrow(/not a key at all/);
  });

  it("has placeholders of a real pair's size, so the user-data size check counts them", () => {
    const real = fixtureTls();
    const fake = placeholderTls(["madbase-prod-1"]);
    const near = (a: string, b: string) => Math.abs(a.length - b.length) / b.length;
    expect(near(fake.caCert, real.caCert)).toBeLessThan(0.1);
    expect(near(fake.nodes["madbase-prod-1"].cert, real.nodes["madbase-prod-1"].cert)).toBeLessThan(0.1);
    expect(near(fake.nodes["madbase-prod-1"].key, real.nodes["madbase-prod-1"].key)).toBeLessThan(0.1);
  });

  it("masks PEM documents in text shown in snapshots and logs", () => {
    const pem = fixtureTls().nodes["madbase-prod-1"].key;
    const indented = `key: |\n${pem
      .split("\n")
      .map((l) => `  ${l}`)
      .join("\n")}`;
    expect(maskPem(`a ${pem} b`)).toBe("a <pem:PRIVATE KEY>\n b");
    expect(maskPem(indented)).not.toContain("PRIVATE KEY-----");
  });
});

describe("the local generator (openssl)", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-tls-unit-"));
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  const three = topo(3);
  const tls = ensureClusterTls(root, three);

  it("makes ECDSA P-256 keys in 0600 files, certificates signed by the cluster CA with the plan's SANs, usages and lifetime", () => {
    const ca = certPaths(root, "ca");
    for (const node of three.nodes) {
      const own = certPaths(root, node.name);
      expect(fs.statSync(own.key).mode & 0o777).toBe(0o600);
      expect(openssl(["verify", "-CAfile", ca.cert, own.cert]).trim()).toBe(`${own.cert}: OK`);
      expect(openssl(["pkey", "-in", own.key, "-noout", "-text"])).toMatch(/ASN1 OID: prime256v1/);
      const text = openssl(["x509", "-in", own.cert, "-noout", "-text"]);
      const spec = nodeCertificateSpec(three, node);
      const sans = [...spec.dnsNames.map((d) => `DNS:${d}`), ...spec.ipAddresses.map((ip) => `IP Address:${ip}`)].join(
        ", ",
      );
      expect(text).toContain(sans);
      expect(text).toMatch(/Extended Key Usage: *\n *TLS Web Server Authentication, TLS Web Client Authentication/);
      expect(text).toMatch(/CA:FALSE/);
      const days =
        (Date.parse(openssl(["x509", "-in", own.cert, "-noout", "-enddate"]).split("=")[1]) - Date.now()) / 86_400_000;
      expect(Math.round(days)).toBe(NODE_VALIDITY_HOURS / 24);
      // The same pair as the render gets.
      expect(tls.nodes[node.name].cert).toBe(fs.readFileSync(own.cert, "utf8"));
    }
    expect(openssl(["x509", "-in", certPaths(root, "ca").cert, "-noout", "-text"])).toMatch(
      /CA:TRUE[\s\S]*Certificate Sign, CRL Sign/,
    );
    // The operator's pair is a client's only.
    expect(openssl(["x509", "-in", certPaths(root, "operator").cert, "-noout", "-ext", "extendedKeyUsage"])).toMatch(
      /TLS Web Client Authentication\s*$/,
    );
  });

  it("keeps what it made: a second call, or a grown cluster, changes no existing pair", () => {
    const again = ensureClusterTls(root, topo(5));
    for (const node of three.nodes) expect(again.nodes[node.name]).toEqual(tls.nodes[node.name]);
    expect(again.caCert).toBe(tls.caCert);
    expect(Object.keys(again.nodes).sort()).toEqual(
      topo(5)
        .nodes.map((n) => n.name)
        .sort(),
    );
  });

  it("a certificate from another CA does not verify against the cluster's", () => {
    const other = path.join(root, "other");
    issueCertificate(caCertificateSpec({ clusterName: "someone-else" }), certPaths(other, "ca"));
    expect(() =>
      openssl(["verify", "-CAfile", certPaths(other, "ca").cert, certPaths(root, "madbase-prod-1").cert]),
    ).toThrow();
  });

  it("writes the plan's extensions, and the key identifiers @pulumi/tls writes: the CA's own, the CA's in what it signs", () => {
    expect(opensslExtensions(nodeCertificateSpec(three, three.nodes[0]))).toBe(
      [
        "basicConstraints = critical, CA:FALSE",
        "keyUsage = critical, digitalSignature, keyEncipherment",
        "subjectKeyIdentifier = none",
        "authorityKeyIdentifier = keyid:always",
        "extendedKeyUsage = serverAuth, clientAuth",
        "subjectAltName = DNS:madbase-prod-1, DNS:madbase-prod, DNS:localhost, IP:10.42.1.10, IP:10.42.1.5, IP:127.0.0.1",
        "",
      ].join("\n"),
    );
    const ids = (id: string) => {
      const text = openssl([
        "x509",
        "-noout",
        "-ext",
        "subjectKeyIdentifier,authorityKeyIdentifier",
        "-in",
        certPaths(root, id).cert,
      ]);
      const after = (name: string) =>
        new RegExp(`X509v3 ${name}:\\s*\\n\\s*(?:keyid:)?([0-9A-F:]+)`).exec(text)?.[1] ?? null;
      return { subject: after("Subject Key Identifier"), authority: after("Authority Key Identifier") };
    };
    const ca = ids("ca");
    expect(ca.subject).toMatch(/^([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
    expect(ca.authority).toBeNull();
    for (const signed of ["madbase-prod-1", "operator"])
      expect(ids(signed)).toEqual({ subject: null, authority: ca.subject });
  });
});

test("config-refresh keeps a node's certificate files and reloads the daemons once, after all of them are in place", () => {
  const { topology, options } = describeCluster(parseSettings("prod", { nodeCount: 3 }));
  const tls = fixtureTls();
  const text = refreshScript(topology, topology.nodes[2], {
    options,
    secrets: randomSecrets(),
    tls,
  });
  const paths = serverPaths().tls;
  for (const [file, owner, mode] of [
    [paths.caCert, "root:root", "0644"],
    [paths.cert, "root:root", "0644"],
    [paths.key, "root:ssl-cert", "0640"],
  ]) {
    expect(text).toContain(`if put_file "${file}" "${owner}" "${mode}" <<'MADBASE_FILE'`);
  }
  expect(text).toContain(Buffer.from(tls.nodes["madbase-prod-3"].key).toString("base64"));
  expect(text).not.toContain(Buffer.from(tls.nodes["madbase-prod-2"].key).toString("base64"));
  const reload = text.indexOf('if [ "${tls_changed:-}" = 1 ]; then');
  expect(reload).toBeGreaterThan(text.lastIndexOf("MADBASE_FILE"));
  expect(text.slice(reload)).toMatch(
    /svc reload patroni && svc reload haproxy && svc reload pgbouncer && runuser -u postgres -- psql .*pg_reload_conf/,
  );
});

test("Patroni takes unsafe calls from loopback and a stack's node addresses only, never the whole subnet (POST /failsafe checks this list alone)", () => {
  const { files } = renderStack({ nodeCount: 3 });
  const patroni = yaml.load(files["madbase-prod-2"]["patroni.yml"]) as { restapi: Record<string, unknown> };
  expect(patroni.restapi).toMatchObject({
    allowlist: ["127.0.0.1", ...possibleNodeAddresses("10.42.1.0/24")],
    allowlist_include_members: true,
    certfile: serverPaths().tls.cert,
    keyfile: serverPaths().tls.key,
    cafile: serverPaths().tls.caCert,
  });
  expect(patroni.restapi.allowlist).not.toContain("10.42.1.0/24");
});

test("the expiry alerts come after a renewal had its chance, and before the end leaves no time to act", () => {
  // Inside the window in which `pulumi up` renews a node's certificate, never before it opens.
  expect(NODE_CERT_ALERT_DAYS).toBeLessThan(NODE_EARLY_RENEWAL_HOURS / 24);
  expect(NODE_CERT_ALERT_DAYS - CERT_CRITICAL_DAYS).toBeGreaterThanOrEqual(7);
  expect(CA_CERT_ALERT_DAYS).toBeGreaterThan(NODE_CERT_ALERT_DAYS);
  expect(CA_CERT_ALERT_DAYS * 24).toBeLessThan(CA_VALIDITY_HOURS);
});
