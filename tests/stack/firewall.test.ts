/**
 * The node firewall: SSH only from adminCidrs, every service port only from the private subnet,
 * the encrypted entry ports also from clientCidrs (never Redis's plain-text 6379), nothing else;
 * never a service port open to the world.
 */
import { parseSettings } from "../../core";
import { SERVICE_PORTS, isWholeInternet, nodeFirewallRules, normalizeCidr, tooWideForDatabase } from "../../core";
import { ProgramRun, T, ofType, runProgram, stackFileConfig } from "./harness";

/** Every port a daemon of the cluster listens on (the issue's list). */
// 2381: etcd's metrics and /health in plain HTTP, since 2379 takes only the cluster's certificates (issue 12).
// 6381: the Redis master through HAProxy with TLS (issue 12: traffic from clientCidrs is TLS only).
const ISSUE_SERVICE_PORTS = [
  5432, 5433, 5434, 5435, 6432, 6379, 6380, 6381, 2379, 2380, 2381, 8008, 26379, 7000, 9100, 9187, 9121, 9127,
];
/** What clients outside the private network may reach: the PostgreSQL entry ports (TLS logins only) and Redis over TLS. */
const CLIENT_REACHABLE = [5433, 5434, 5435, 6381];
const WORLD = ["0.0.0.0/0", "::/0"];

interface Rule {
  direction: string;
  protocol: string;
  port?: string;
  sourceIps?: string[];
}

function rulesOf(run: ProgramRun): Rule[] {
  const firewalls = ofType(run, T.firewall);
  expect(firewalls).toHaveLength(1);
  return firewalls[0].inputs.rules as Rule[];
}

/** The ports a rule's port field covers ("5432", "5432-5434" or "any"). */
function portsOf(rule: Rule): number[] | "any" {
  if (!rule.port || rule.port === "any") return "any";
  const [from, to] = rule.port.split("-").map(Number);
  return Array.from({ length: (to ?? from) - from + 1 }, (_, i) => from + i);
}

describe("declared firewall", () => {
  const config = {
    ...stackFileConfig("prod"),
    adminCidrs: '["198.51.100.7/32", "2001:db8:1::/48"]',
    clientCidrs: '["203.0.113.0/24", "2001:db8:2::/56"]',
  };
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram({ stack: "prod", config });
  });

  test("the service port list matches the issue's", () => {
    expect([...SERVICE_PORTS].sort()).toEqual([...ISSUE_SERVICE_PORTS].sort());
  });

  test("no rule opens a service port to 0.0.0.0/0 or ::/0", () => {
    for (const rule of rulesOf(run)) {
      const ports = portsOf(rule);
      const coversService = ports === "any" || ports.some((p) => ISSUE_SERVICE_PORTS.includes(p));
      if (coversService) for (const world of WORLD) expect(rule.sourceIps ?? []).not.toContain(world);
    }
  });

  test("every rule is inbound TCP on one port, never any/ranges", () => {
    for (const rule of rulesOf(run)) {
      expect(rule).toMatchObject({ direction: "in", protocol: "tcp" });
      expect(rule.port).toMatch(/^\d+$/);
    }
  });

  test("SSH is open to the admin networks only", () => {
    const ssh = rulesOf(run).filter((r) => r.port === "22");
    expect(ssh).toHaveLength(1);
    expect(ssh[0].sourceIps).toEqual(["198.51.100.7/32", "2001:db8:1::/48"]);
  });

  test("each service port is open from the private subnet; only the encrypted entry ports also from client networks", () => {
    const rules = rulesOf(run);
    for (const port of ISSUE_SERVICE_PORTS) {
      const sources = rules.filter((r) => r.port === String(port)).flatMap((r) => r.sourceIps ?? []);
      const expected = CLIENT_REACHABLE.includes(port)
        ? ["10.42.1.0/24", "203.0.113.0/24", "2001:db8:2::/56"]
        : ["10.42.1.0/24"];
      expect(sources.sort()).toEqual(expected.sort());
    }
  });

  test("nothing else is open", () => {
    const allowed = new Set(["22", ...ISSUE_SERVICE_PORTS.map(String)]);
    for (const rule of rulesOf(run)) expect(allowed.has(rule.port ?? "any")).toBe(true);
  });

  test("without admin or client networks there is no SSH rule and no public source at all", async () => {
    const closed = await runProgram({ stack: "prod", config: stackFileConfig("prod") });
    const rules = rulesOf(closed);
    expect(rules.some((r) => r.port === "22")).toBe(false);
    for (const rule of rules) expect(rule.sourceIps).toEqual(["10.42.1.0/24"]);
    expect(closed.logs.join("\n")).toMatch(/adminCidrs is empty: SSH to the nodes is closed/);
  });

  test("SSH open to the world is allowed but warned about; service ports stay private", async () => {
    const open = await runProgram({
      stack: "prod",
      config: { ...stackFileConfig("prod"), adminCidrs: '["0.0.0.0/0"]' },
    });
    expect(open.error).toBeUndefined();
    expect(open.logs.join("\n")).toMatch(/opens SSH to the whole Internet \(0\.0\.0\.0\/0\)/);
    for (const rule of rulesOf(open)) if (rule.port !== "22") expect(rule.sourceIps).toEqual(["10.42.1.0/24"]);
  });
});

describe("clientCidrs that would face the Internet are refused before anything is declared", () => {
  test.each([
    ['["0.0.0.0/0"]', "0.0.0.0/0"],
    ['["::/0"]', "::/0"],
    ['["10.0.0.0/8", "0.0.0.0/1"]', "0.0.0.0/1"],
    ['["2000::/3"]', "2000::/3"],
  ])("clientCidrs %s", async (value, bad) => {
    const run = await runProgram({ stack: "prod", config: { ...stackFileConfig("prod"), clientCidrs: value } });
    expect(run.error?.name).toBe("ConfigError");
    expect(run.error?.message).toContain(`madbase-state:clientCidrs.`);
    expect(run.error?.message).toContain(JSON.stringify(bad));
    expect(run.error?.message).toMatch(/must not face the whole Internet/);
    expect(run.resources).toHaveLength(0);
  });
});

describe("firewall rules (pure)", () => {
  const settings = (raw: Record<string, unknown>) => parseSettings("prod", raw);

  test("host bits are cleared, since Hetzner takes network addresses", () => {
    expect(normalizeCidr("203.0.113.7/24", "x")).toBe("203.0.113.0/24");
    expect(normalizeCidr("2001:db8::1/64", "x")).toBe("2001:db8::/64");
    expect(normalizeCidr("198.51.100.7/32", "x")).toBe("198.51.100.7/32");
  });

  test("IPv4-mapped IPv6 ranges are refused rather than read as IPv6", () => {
    expect(() => normalizeCidr("::ffff:0.0.0.0/96", "madbase-state:clientCidrs.0")).toThrow(/IPv4 form/);
  });

  test("width limits", () => {
    expect(isWholeInternet("0.0.0.0/0")).toBe(true);
    expect(isWholeInternet("::/0")).toBe(true);
    expect(isWholeInternet("10.0.0.0/8")).toBe(false);
    expect(tooWideForDatabase("10.0.0.0/8")).toBe(false);
    expect(tooWideForDatabase("10.0.0.0/7")).toBe(true);
    expect(tooWideForDatabase("2001:db8::/32")).toBe(false);
    expect(tooWideForDatabase("2001::/16")).toBe(true);
  });

  test("rules come out normalized and in a stable order", () => {
    const rules = nodeFirewallRules(settings({ adminCidrs: ["198.51.100.9/24"], clientCidrs: ["203.0.113.9/28"] }));
    expect(rules[0]).toEqual({
      description: "SSH from admin networks",
      direction: "in",
      protocol: "tcp",
      port: "22",
      sourceIps: ["198.51.100.0/24"],
    });
    expect(rules.slice(1, 1 + SERVICE_PORTS.length).map((r) => Number(r.port))).toEqual([...SERVICE_PORTS]);
    expect(rules.slice(1 + SERVICE_PORTS.length).map((r) => [r.port, r.sourceIps])).toEqual(
      CLIENT_REACHABLE.map((p) => [String(p), ["203.0.113.0/28"]]),
    );
  });
});
