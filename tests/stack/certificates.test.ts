/**
 * The cluster's certificates as the program declares them (@pulumi/tls, under mocks): one CA and
 * a key, request and certificate per node, from the plan in core/tls.ts; the keys secret
 * everywhere; every input the same across runs and node counts (so `pulumi up` never replaces a
 * running node's certificate); and each node's user data carrying its own pair and the CA.
 */
import {
  CA_VALIDITY_HOURS,
  NODE_EARLY_RENEWAL_HOURS,
  NODE_VALIDITY_HOURS,
  buildTopology,
  caCertificateSpec,
  nodeCertificateSpec,
  operatorCertificateSpec,
  writtenFiles,
} from "../../core";
import { ProgramRun, T, isSecretEnvelope, ofType, plainStrings, runProgram, stackFileConfig } from "./harness";

const prodWith = (nodeCount: number) =>
  runProgram({ stack: "prod", config: { ...stackFileConfig("prod"), nodeCount: String(nodeCount) } });
const topology = buildTopology({ stack: "prod", nodeCount: 3, subnetCidr: "10.42.1.0/24" });

let three: ProgramRun;
beforeAll(async () => {
  three = await prodWith(3);
  expect(three.error).toBeUndefined();
});

test("a CA (ECDSA P-256, self-signed, 10 years) and a key, request and certificate per node with the plan's SANs and usages, and the operator's client pair", () => {
  const keys = ofType(three, T.privateKey);
  expect(keys).toHaveLength(1 + 3 + 1);
  for (const k of keys) expect(k.inputs).toMatchObject({ algorithm: "ECDSA", ecdsaCurve: "P256" });
  const [ca] = ofType(three, T.selfSignedCert);
  const caSpec = caCertificateSpec(topology);
  expect(ca.inputs).toMatchObject({
    isCaCertificate: true,
    validityPeriodHours: CA_VALIDITY_HOURS,
    allowedUses: caSpec.usages,
    subject: { commonName: "madbase-prod CA", organization: caSpec.organization },
  });
  const requests = ofType(three, T.certRequest);
  const certs = ofType(three, T.locallySignedCert);
  expect([requests.length, certs.length]).toEqual([3 + 1, 3 + 1]);
  // The operator's: client only, no name or address, published as outputs (its key secret).
  const operatorSpec = operatorCertificateSpec(topology);
  expect(requests.find((r) => r.name.endsWith("-operator-csr"))!.inputs).toMatchObject({
    subject: { commonName: "madbase-prod operator" },
  });
  const operatorCert = certs.find((c) => c.name.endsWith("-operator-cert"))!;
  expect(operatorCert.inputs).toMatchObject({
    allowedUses: operatorSpec.usages,
    caCertPem: three.outputs.caCertificate.value,
  });
  expect(operatorSpec.usages).toEqual(["digital_signature", "client_auth"]);
  expect(three.outputs.operatorCertificate).toMatchObject({ known: true, secret: false });
  expect(three.outputs.operatorPrivateKey).toMatchObject({ known: true, secret: true });
  for (const node of topology.nodes) {
    const spec = nodeCertificateSpec(topology, node);
    const req = requests.find((r) => r.name.endsWith(`-${node.name}-csr`))!;
    expect(req.inputs).toMatchObject({
      dnsNames: spec.dnsNames,
      ipAddresses: spec.ipAddresses,
      subject: { commonName: node.name },
    });
    // The node's address, the entry point's (the load balancer) and loopback.
    expect(req.inputs.ipAddresses).toEqual([node.privateIp, "10.42.1.5", "127.0.0.1"]);
    const cert = certs.find((c) => c.name.endsWith(`-${node.name}-cert`))!;
    expect(cert.inputs).toMatchObject({
      validityPeriodHours: NODE_VALIDITY_HOURS,
      earlyRenewalHours: NODE_EARLY_RENEWAL_HOURS,
      allowedUses: ["digital_signature", "key_encipherment", "server_auth", "client_auth"],
      caCertPem: three.outputs.caCertificate.value,
    });
  }
  // protectNodes (prod): the CA and every key are protected like the passwords.
  for (const r of [...keys, ca]) expect([r.name, r.options.protect]).toEqual([r.name, true]);
});

test("private keys are secret wherever they go; the CA certificate is a plain output", () => {
  const keyValues = ofType(three, T.certRequest).map((r) => r.inputs.privateKeyPem as string);
  expect(keyValues.every((k) => /^-----BEGIN EC PRIVATE KEY-----\n/.test(k))).toBe(true);
  for (const r of ofType(three, T.certRequest)) expect(isSecretEnvelope(r.raw.privateKeyPem)).toBe(true);
  for (const r of ofType(three, T.locallySignedCert)) expect(isSecretEnvelope(r.raw.caPrivateKeyPem)).toBe(true);
  for (const r of three.resources) for (const k of keyValues) expect(plainStrings(r.raw).join("\n")).not.toContain(k);
  expect(three.outputs.caCertificate).toMatchObject({ known: true, secret: false });
  expect(three.outputs.caCertificate.value).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
});

test("each node's user data carries the CA, its own certificate and its own key (root:ssl-cert 0640)", () => {
  const requests = ofType(three, T.certRequest);
  for (const server of ofType(three, T.server)) {
    const files = Object.fromEntries(writtenFiles(server.inputs.userData as string).map((f) => [f.path, f]));
    expect(files["/etc/madbase/tls/ca.crt"].content).toBe(three.outputs.caCertificate.value);
    expect(files["/etc/madbase/tls/node.key"]).toMatchObject({ owner: "root:ssl-cert", permissions: "0640" });
    expect(files["/etc/madbase/tls/node.key"].content).toBe(
      requests.find((r) => r.name.endsWith(`-${server.name}-csr`))!.inputs.privateKeyPem,
    );
    expect(files["/etc/madbase/tls/node.crt"].content).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
    expect(files["/etc/madbase/tls/node.crt"].content).not.toBe(three.outputs.caCertificate.value);
  }
});

test("the same inputs give the same certificates: another run, or a grown cluster, changes none of the existing ones", async () => {
  const tlsOf = (run: ProgramRun) =>
    Object.fromEntries(
      run.resources
        .filter((r) => r.type.startsWith("tls:"))
        .map((r) => [r.name, { inputs: r.inputs, protect: r.options.protect }]),
    );
  const again = tlsOf(await prodWith(3));
  expect(again).toEqual(tlsOf(three));
  const five = tlsOf(await prodWith(5));
  for (const [name, value] of Object.entries(tlsOf(three))) expect([name, five[name]]).toEqual([name, value]);
  expect(Object.keys(five).length - Object.keys(again).length).toBe(2 * 3);
});
