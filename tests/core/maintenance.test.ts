/**
 * The pure parts of package updates (core/maintenance.ts): the data sources and units, the
 * policy-rc.d that refuses exactly the data units (run for real), unattended-upgrades' settings,
 * the files a node gets (bundle and config-refresh alike), the metrics read back, and the roll's
 * rules (mixed PostgreSQL majors refused, the leader's node last).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fixtureTls, randomSecrets } from "../support/fixtures";
import {
  DATA_SOURCES,
  DATA_UNITS,
  NODE_PACKAGES,
  POSTGRES_MAJOR,
  POLICY_RC_D,
  RefusedError,
  UNATTENDED_UPGRADES_CONF,
  UPDATES_ENV_FILE,
  UPDATES_METRICS,
  UPDATES_METRICS_UNITS,
  UsageError,
  checkPostgresMajors,
  describeUpdates,
  nextMaintenanceNode,
  parseMaintenanceOptions,
  parseUpdatesMetrics,
  postgresMajor,
  refreshedFiles,
  refreshScript,
  renderNode,
  renderPolicyRcD,
  renderUnattendedUpgrades,
  serverPaths,
  writtenFiles,
  describeCluster,
  parseSettings,
} from "../../core";

function renderInput() {
  const { topology, options } = describeCluster(parseSettings("prod", { nodeCount: 3, plan: "cx31" }));
  return {
    topology,
    node: topology.nodes[0],
    options,
    secrets: randomSecrets(),
    tls: fixtureTls(),
    paths: serverPaths(),
  };
}

describe("what is held and refused", () => {
  test("every data-layer source is listed once, PostgreSQL's with the major the nodes install", () => {
    expect(new Set(DATA_SOURCES).size).toBe(DATA_SOURCES.length);
    expect(DATA_SOURCES).toContain(`postgresql-${POSTGRES_MAJOR}`);
    expect(NODE_PACKAGES).toContain(`postgresql-${POSTGRES_MAJOR}`);
    expect(NODE_PACKAGES).toContain("unattended-upgrades");
  });

  const policy = (dir: string) => {
    const file = path.join(dir, "policy-rc.d");
    fs.writeFileSync(file, renderPolicyRcD(), { mode: 0o755 });
    return (...args: string[]) => spawnSync("sh", [file, ...args]).status;
  };

  test("policy-rc.d refuses (101) every data unit, however a maintainer script names it, and lets the rest through", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "policy-"));
    try {
      const run = policy(dir);
      for (const unit of DATA_UNITS) {
        expect([unit, run(unit, "restart")]).toEqual([unit, 101]);
        expect([unit, run(`${unit}.service`, "start")]).toEqual([unit, 101]);
        expect([unit, run("--quiet", unit, "stop")]).toEqual([unit, 101]);
      }
      expect(run("postgresql@17-main.service", "restart")).toBe(101);
      expect(run("redis-server@x", "start")).toBe(101);
      for (const unit of ["ssh", "cron.service", "prometheus-node-exporter", "unattended-upgrades"])
        expect([unit, run(unit, "restart")]).toEqual([unit, 0]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("unattended-upgrades takes Debian's security suite only, never reboots, and blacklists the data sources", () => {
    const conf = renderUnattendedUpgrades();
    expect(conf).toContain('"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";');
    expect(conf).toContain('Unattended-Upgrade::Automatic-Reboot "false";');
    expect(conf).toContain('APT::Periodic::Unattended-Upgrade "1";');
    for (const s of DATA_SOURCES) expect(conf).toContain(`"${s}";`);
  });
});

describe("a node's files", () => {
  const input = renderInput();
  const files = renderNode(input);
  const bundled = writtenFiles(files["user-data.yaml"]);
  const refreshed = refreshedFiles(input, files);

  test("the user data keeps every unit refused and unattended upgrades off until the first config-refresh", () => {
    // The install-time policy-rc.d (written before the packages) refuses every unit, and stays.
    expect(bundled.find((f) => f.path === POLICY_RC_D)!.content).toMatch(/exit 101\n$/);
    const firstBoot = bundled.find((f) => f.path.endsWith("/madbase-first-boot"))!.content;
    expect(firstBoot).not.toContain('rm -f "$POLICY_RC_D"');
    expect(bundled.find((f) => f.path === "/etc/apt/apt.conf.d/51madbase-until-refresh")!.content).toBe(
      'APT::Periodic::Unattended-Upgrade "0";\n',
    );
    // The rest comes with config-refresh (Hetzner's 32 KiB of user data has no room for it).
    expect(bundled.map((f) => f.path)).not.toContain("/usr/local/sbin/madbase-updates");
  });

  test("config-refresh brings the updates script, its values, the data-only policy-rc.d and the metrics timer", () => {
    const byPath = new Map(refreshed.map((f) => [f.path, f]));
    expect(byPath.get(POLICY_RC_D)!.content).toBe(renderPolicyRcD());
    expect(byPath.get(POLICY_RC_D)!.mode).toBe("0755");
    expect(byPath.get("/usr/local/sbin/madbase-updates")!.mode).toBe("0755");
    expect(byPath.get(UPDATES_ENV_FILE)!.content).toContain(`DATA_SOURCES="${DATA_SOURCES.join(" ")}"`);
    // Turns unattended upgrades on again, after the user data's 51madbase-until-refresh.
    expect(UNATTENDED_UPGRADES_CONF > "/etc/apt/apt.conf.d/51madbase-until-refresh").toBe(true);
    expect(byPath.get(UNATTENDED_UPGRADES_CONF)!.content).toBe(renderUnattendedUpgrades());
    expect(byPath.get(`/etc/systemd/system/${UPDATES_METRICS_UNITS[1]}`)!.after).toContain(
      `svc start ${UPDATES_METRICS_UNITS[1]}`,
    );
    // The holds follow the files, every run.
    const script = refreshScript(input.topology, input.node, {
      options: input.options,
      secrets: input.secrets,
      tls: input.tls,
    });
    expect(script).toContain('held=$("/usr/local/sbin/madbase-updates" hold)');
    expect(script.indexOf('held=$("/usr/local/sbin/madbase-updates" hold)')).toBeGreaterThan(
      script.indexOf(POLICY_RC_D),
    );
  });
});

describe("what a node reports", () => {
  const text = [
    `# TYPE ${UPDATES_METRICS.pendingSince} gauge`,
    `${UPDATES_METRICS.pendingSince}{package="postgresql-17",installed="17.12-0+deb13u1",candidate="17.13-0+deb13u1",held="1",security="1"} 1000`,
    `${UPDATES_METRICS.pendingSince}{package="redis-server",installed="5:8.0.2-3",candidate="5:8.0.2-4",held="1",security="0"} 2000`,
    `${UPDATES_METRICS.pendingSince}{package="libssl3t64",installed="3.5.1-1",candidate="3.5.1-1+deb13u1",held="0",security="1"} 3000`,
    `${UPDATES_METRICS.replacedCode}{daemon="patroni"} 1`,
    `${UPDATES_METRICS.replacedCode}{daemon="redis"} 0`,
    `${UPDATES_METRICS.rebootRequired} 1`,
    `${UPDATES_METRICS.rebootRequiredSince} 86400`,
    `${UPDATES_METRICS.collected} 999999`,
    "version postgresql-17 17.12-0+deb13u1",
  ].join("\n");

  test("the textfile reads back as pending updates, stale daemons, reboot and versions", () => {
    const u = parseUpdatesMetrics(text);
    expect(u.pending.map((p) => [p.package, p.held, p.security, p.since])).toEqual([
      ["postgresql-17", true, true, 1000],
      ["redis-server", true, false, 2000],
      ["libssl3t64", false, true, 3000],
    ]);
    expect(u.pending[1].installed).toBe("5:8.0.2-3");
    expect(u.replacedCode).toEqual(["patroni"]);
    expect(u.rebootRequiredSince).toBe(86400);
    expect(u.collected).toBe(999999);
    expect(u.versions).toEqual({ "postgresql-17": "17.12-0+deb13u1" });
    expect(describeUpdates(u, 86400 * 3)).toBe(
      "postgresql 17.12-0+deb13u1; held with newer versions: 2 (1 security); security updates pending: 1; daemons on replaced code: patroni; reboot required for 2 d",
    );
    expect(describeUpdates(parseUpdatesMetrics(""))).toBe(
      "held with newer versions: 0; security updates pending: 0; daemons on replaced code: none; no reboot required",
    );
  });
});

describe("rolling maintenance rules", () => {
  test("options: data and auto by default; bad values and a roll of nothing refused", () => {
    expect(parseMaintenanceOptions(undefined, undefined)).toEqual({ packages: "data", reboot: "auto" });
    expect(parseMaintenanceOptions("none", "always")).toEqual({ packages: "none", reboot: "always" });
    expect(() => parseMaintenanceOptions("some", undefined)).toThrow(UsageError);
    expect(() => parseMaintenanceOptions(undefined, "sometimes")).toThrow(UsageError);
    expect(() => parseMaintenanceOptions("none", "never")).toThrow(/does nothing/);
  });

  test("PostgreSQL majors: minors may mix, majors never (installed or about to be)", () => {
    expect(postgresMajor("17.12-0+deb13u1")).toBe(17);
    expect(postgresMajor("1:18.1-1")).toBe(18);
    expect(() =>
      checkPostgresMajors([
        { name: "n1", installed: "17.12-0+deb13u1" },
        { name: "n2", installed: "17.13-0+deb13u1", candidate: "17.14-0+deb13u1" },
      ]),
    ).not.toThrow();
    expect(() =>
      checkPostgresMajors([
        { name: "n1", installed: "17.12-0+deb13u1" },
        { name: "n2", installed: "18.1-1" },
      ]),
    ).toThrow(RefusedError);
    expect(() => checkPostgresMajors([{ name: "n1", installed: "17.12-0+deb13u1", candidate: "18.1-1" }])).toThrow(
      /mixed PostgreSQL majors: 17 \(n1 17\.12-0\+deb13u1\); 18 \(n1 18\.1-1\)/,
    );
  });

  test("the next node: a replica (highest index first), the leader's node only when it is the last", () => {
    expect(nextMaintenanceNode(["n1", "n2", "n3"], "n1")).toBe("n3");
    expect(nextMaintenanceNode(["n1", "n2", "n3"], "n3")).toBe("n2");
    expect(nextMaintenanceNode(["n1", "n2"], "n1")).toBe("n2");
    expect(nextMaintenanceNode(["n1"], "n1")).toBe("n1");
    expect(nextMaintenanceNode(["n1", "n2"], undefined)).toBe("n2");
    expect(nextMaintenanceNode([], "n1")).toBeUndefined();
  });
});

test("serverPaths gives the updates script a home beside the other node scripts", () => {
  expect(serverPaths().scriptDir).toBe("/usr/local/sbin");
});
