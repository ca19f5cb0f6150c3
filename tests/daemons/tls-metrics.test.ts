/**
 * `madbase-tls-metrics` (templates/scripts/tls-metrics.sh) run as its unit runs it, on certificates
 * openssl made the way the local runner makes the cluster's: the textfile it writes holds each
 * certificate's end as Node's own X.509 parser reads it, says which file it could not read, and is
 * what node exporter's textfile collector and the alert rules expect (core/tls.ts TLS_METRICS).
 * The rendered units pass systemd-analyze verify, and ExecStart names the node's certificate files.
 */
import { X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  NODE_TIMERS,
  TLS_METRICS,
  TLS_METRICS_CERTIFICATES,
  TLS_METRICS_FILE,
  TLS_METRICS_INTERVAL_SECONDS,
  TLS_METRICS_UNITS,
  caCertificateSpec,
  describeCluster,
  nodeCertificateSpec,
  parseSettings,
  renderTlsMetricsUnits,
  serverPaths,
} from "../../core";
import { issueCertificate } from "../../local/tls";
import { parseMetrics, sampleValue } from "../../local/metrics";
import { fixtureTls, randomSecrets } from "../support/fixtures";
import { run } from "../support/proc";

jest.setTimeout(60_000);

const SCRIPT = path.resolve(__dirname, "..", "..", "templates", "scripts", "tls-metrics.sh");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-tls-metrics-"));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const { topology, options } = describeCluster(parseSettings("prod", { nodeCount: 3 }));
const ca = { cert: path.join(work, "ca.crt"), key: path.join(work, "ca.key") };
const node = { cert: path.join(work, "node.crt"), key: path.join(work, "node.key") };
beforeAll(() => {
  issueCertificate(caCertificateSpec(topology), ca);
  // A node certificate ten days from its end, as one would be that no `pulumi up` renewed.
  issueCertificate({ ...nodeCertificateSpec(topology, topology.nodes[0]), validityHours: 10 * 24 }, node, ca);
});

const notAfter = (file: string) =>
  Math.floor(new Date(new X509Certificate(fs.readFileSync(file)).validTo).getTime() / 1000);

test("it writes each certificate's end and whether it could read it, atomically, readable by node exporter", async () => {
  const out = path.join(work, "out", "madbase-tls.prom");
  fs.mkdirSync(path.dirname(out));
  const missing = path.join(work, "gone.crt");
  const before = Math.floor(Date.now() / 1000);
  const r = await run(["bash", SCRIPT, out, `ca=${ca.cert}`, `node=${node.cert}`, `old=${missing}`]);
  expect([r.code, r.stderr]).toEqual([0, ""]);
  const samples = parseMetrics(fs.readFileSync(out, "utf8"));
  expect(sampleValue(samples, TLS_METRICS.notAfter, { certificate: "ca" })).toBe(notAfter(ca.cert));
  expect(sampleValue(samples, TLS_METRICS.notAfter, { certificate: "node" })).toBe(notAfter(node.cert));
  const leftDays = (notAfter(node.cert) - before) / 86400;
  expect(leftDays).toBeGreaterThan(9.9);
  expect(leftDays).toBeLessThanOrEqual(10);
  expect(sampleValue(samples, TLS_METRICS.readable, { certificate: "ca" })).toBe(1);
  expect(sampleValue(samples, TLS_METRICS.readable, { certificate: "old" })).toBe(0);
  // No end is made up for a file it could not read.
  expect(sampleValue(samples, TLS_METRICS.notAfter, { certificate: "old" })).toBeUndefined();
  expect(sampleValue(samples, TLS_METRICS.collected)).toBeGreaterThanOrEqual(before);
  expect(new Set(samples.map((s) => s.name))).toEqual(new Set(Object.values(TLS_METRICS)));
  expect(fs.statSync(out).mode & 0o777).toBe(0o644);
  // Only the file itself: no temporary file left beside it for the collector to read.
  expect(fs.readdirSync(path.dirname(out))).toEqual(["madbase-tls.prom"]);
});

test("a certificate file that is not a certificate counts as unreadable", async () => {
  const out = path.join(work, "bad.prom");
  fs.writeFileSync(path.join(work, "junk.crt"), "not a certificate\n");
  const r = await run(["bash", SCRIPT, out, `node=${path.join(work, "junk.crt")}`]);
  expect(r.code).toBe(0);
  const samples = parseMetrics(fs.readFileSync(out, "utf8"));
  expect(sampleValue(samples, TLS_METRICS.readable, { certificate: "node" })).toBe(0);
  expect(sampleValue(samples, TLS_METRICS.notAfter, { certificate: "node" })).toBeUndefined();
});

test("bad usage exits 2 and writes nothing", async () => {
  const out = path.join(work, "usage.prom");
  for (const args of [[], [out], [out, "node"], [out, "Node=/x.crt"], [out, "node=relative.crt"]]) {
    const r = await run(["bash", SCRIPT, ...args]);
    expect([args, r.code, r.stderr]).toEqual([args, 2, expect.stringContaining("usage: madbase-tls-metrics")]);
  }
  expect(fs.existsSync(out)).toBe(false);
});

test("its units pass systemd-analyze verify; the job reads the node's CA and certificate; first boot enables the timer", async () => {
  const paths = { ...serverPaths(), scriptDir: work };
  fs.copyFileSync(SCRIPT, path.join(work, "madbase-tls-metrics"));
  fs.chmodSync(path.join(work, "madbase-tls-metrics"), 0o755);
  const units = renderTlsMetricsUnits({
    topology,
    node: topology.nodes[0],
    options,
    secrets: randomSecrets(),
    tls: fixtureTls(),
    paths,
  });
  expect(units.map((u) => path.basename(u.path))).toEqual([...TLS_METRICS_UNITS]);
  const dir = path.join(work, "units");
  fs.mkdirSync(dir);
  for (const u of units) fs.writeFileSync(path.join(dir, path.basename(u.path)), u.content);
  for (const u of TLS_METRICS_UNITS) {
    const r = await run(["systemd-analyze", "verify", "--man=no", path.join(dir, u)], { timeoutMs: 30_000 });
    const text = r.stdout + r.stderr;
    expect([u, r.code, /Unknown (key|section)|Failed to parse|Invalid|is not executable/.test(text)]).toEqual([
      u,
      0,
      false,
    ]);
  }
  const service = units[0].content;
  const certs = TLS_METRICS_CERTIFICATES.map((c) => `${c}=${c === "ca" ? paths.tls.caCert : paths.tls.cert}`);
  expect(service).toContain(`ExecStart=${work}/madbase-tls-metrics ${TLS_METRICS_FILE} ${certs.join(" ")}\n`);
  expect(units[1].content).toMatch(new RegExp(`^OnUnitActiveSec=${TLS_METRICS_INTERVAL_SECONDS}s$`, "m"));
  expect(NODE_TIMERS).toContain(TLS_METRICS_UNITS[1]);
});
