/**
 * Metrics stay on the private network: under the declared Hetzner firewall, the exporter ports
 * (9100 node, 9187 PostgreSQL, 9121 Redis) are reachable from the private subnet only, whatever
 * admin and client networks the stack opens; the exporters in each node's user data bind that
 * node's private address; the prometheusConfig output names every node's endpoints and no secret.
 * (That the exporters really bind only there is checked on running daemons in tests/local.)
 */
import * as ipaddr from "ipaddr.js";
import * as yaml from "js-yaml";
import { PORTS, SCRAPE_JOBS, readEnvFile, writtenFiles } from "../../core";
import { ENTRY_PORTS } from "../../core";
import { ProgramRun, T, ofType, runProgram, stackFileConfig } from "./harness";

const EXPORTER_PORTS = [PORTS.nodeExporter, PORTS.postgresExporter, PORTS.redisExporter];

interface Rule {
  direction: string;
  protocol: string;
  port?: string;
  sourceIps?: string[];
}

/** Does this inbound rule let TCP to `port` in? ("any", ranges and single ports alike.) */
function covers(rule: Rule, port: number): boolean {
  if (rule.direction !== "in" || !["tcp", "any"].includes(rule.protocol)) return false;
  if (!rule.port || rule.port === "any") return true;
  const [from, to] = rule.port.split("-").map(Number);
  return port >= from && port <= (to ?? from);
}

function rulesOf(run: ProgramRun): Rule[] {
  const [firewall] = ofType(run, T.firewall);
  return firewall.inputs.rules as Rule[];
}

describe.each([
  ["no admin or client networks", {}],
  [
    "admin and client networks",
    { adminCidrs: '["198.51.100.7/32", "2001:db8:1::/48"]', clientCidrs: '["203.0.113.0/24", "2001:db8:2::/56"]' },
  ],
  ["SSH open to the world", { adminCidrs: '["0.0.0.0/0", "::/0"]' }],
])("prod with %s", (_label, extra: Record<string, string>) => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram({ stack: "prod", config: { ...stackFileConfig("prod"), ...extra } });
    expect(run.error).toBeUndefined();
  });

  test.each(EXPORTER_PORTS)("port %i is open to the private subnet, and to nothing else", (port) => {
    const subnet = stackFileConfig("prod").subnetCidr ?? "10.42.1.0/24";
    const sources = rulesOf(run)
      .filter((r) => covers(r, port))
      .flatMap((r) => r.sourceIps ?? []);
    expect(sources).toEqual([subnet]);
    const [addr] = ipaddr.parseCIDR(sources[0]);
    expect(addr.range()).toBe("private");
  });

  test("the exporter ports are not entry ports (clientCidrs never reach them)", () => {
    for (const port of EXPORTER_PORTS) expect(ENTRY_PORTS as readonly number[]).not.toContain(port);
  });
});

describe("what the stack hands to the nodes and to Prometheus", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram({ stack: "prod", config: { ...stackFileConfig("prod"), nodeCount: "3" } });
  });

  test("each server's cloud-init binds its exporters to that server's private address", () => {
    for (const server of ofType(run, T.server)) {
      const ip = server.inputs.networks[0].ip as string;
      const written = writtenFiles(server.inputs.userData as string);
      const file = (p: string) => readEnvFile(written.find((f) => f.path === p)!.content);
      expect(file("/etc/default/prometheus-node-exporter").ARGS).toBe(
        `--web.listen-address=${ip}:${PORTS.nodeExporter}`,
      );
      expect(file("/etc/default/prometheus-postgres-exporter").ARGS).toBe(
        `--web.listen-address=${ip}:${PORTS.postgresExporter}`,
      );
      expect(file("/etc/default/prometheus-redis-exporter").REDIS_EXPORTER_WEB_LISTEN_ADDRESS).toBe(
        `${ip}:${PORTS.redisExporter}`,
      );
    }
  });

  test("prometheusConfig is a plain output naming every node's endpoints, without a secret", () => {
    const out = run.outputs.prometheusConfig;
    expect(out).toMatchObject({ known: true, secret: false });
    const text = out.value as string;
    for (const s of run.secretValues) expect(text).not.toContain(s);
    const doc = yaml.load(text) as { scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[] };
    const ips = ofType(run, T.server)
      .map((s) => s.inputs.networks[0].ip as string)
      .sort();
    expect(doc.scrape_configs).toHaveLength(SCRAPE_JOBS.length);
    for (const [i, job] of doc.scrape_configs.entries()) {
      const targets = job.static_configs.flatMap((c) => c.targets).sort();
      expect(targets).toEqual(ips.map((ip) => `${ip}:${SCRAPE_JOBS[i].port}`));
    }
  });
});
