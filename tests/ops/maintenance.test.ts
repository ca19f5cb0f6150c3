/**
 * `npm run ops -- maintenance` and status's updates, the pure parts: the arguments, what the verb
 * says it risks, the node script it sends (no secret in it, the node's own values), and each
 * node's updates read back into status.
 */
import { spawnSync } from "node:child_process";
import { UsageError, maintainScript, nodeSettleScript, MAINTENANCE_REBOOT_MARK, UPDATES_METRICS } from "../../core";
import { OpsTarget, parseOpsArgs, riskOf } from "../../core/ops";
import { formatOpsStatus, judgeStatus, nodeStatusScript, parseNodeReport } from "../../core/ops-status";

const refusal = (f: () => unknown): Error => {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error("no refusal");
};

describe("arguments", () => {
  test("maintenance: --packages data and --reboot auto by default, each checked", () => {
    expect(parseOpsArgs(["maintenance", "--stack", "prod", "--local"])).toEqual({
      verb: "maintenance",
      stack: "prod",
      local: true,
      options: { packages: "data", reboot: "auto" },
    });
    expect(parseOpsArgs(["maintenance", "--stack", "prod", "--packages", "none", "--reboot", "always"])).toMatchObject({
      options: { packages: "none", reboot: "always" },
    });
    expect(refusal(() => parseOpsArgs(["maintenance", "--stack", "prod", "--packages", "some"]))).toEqual(
      new UsageError('--packages takes data, all, none, not "some"'),
    );
    expect(refusal(() => parseOpsArgs(["maintenance", "--stack", "prod", "--reboot", "now"])).message).toBe(
      '--reboot takes auto, always, never, not "now"',
    );
    expect(refusal(() => parseOpsArgs(["status", "--stack", "prod", "--packages", "all"])).message).toBe(
      "status does not take --packages; it takes --stack, --local, --ssh-key, --json",
    );
    expect(refusal(() => parseOpsArgs(["maintenance", "--stack", "prod", "now"])).message).toContain(
      "takes no arguments",
    );
  });

  test("it says what it risks before it acts", () => {
    const request = parseOpsArgs(["maintenance", "--stack", "prod", "--packages", "all"]);
    expect(riskOf(request as never, { clusterName: "madbase-prod" })).toMatch(
      /^no acknowledged write: one node at a time .* Packages: all; reboot: auto\.$/,
    );
  });
});

describe("the node scripts", () => {
  test("node-maintain carries no value of any node or stack, only the roll's options and where done nodes are", () => {
    const s = maintainScript({ packages: "data", reboot: "auto", prefer: ["madbase-prod-3"] });
    expect(s).toContain('. "/etc/madbase/node.env"');
    expect(s).toContain('readonly PACKAGES="data" REBOOT="auto"');
    expect(s).toContain('readonly PREFERRED=("madbase-prod-3" )');
    expect(s).toContain(`echo "${MAINTENANCE_REBOOT_MARK} (`);
    expect(s).not.toMatch(/10\.42\.1\.|madbase-prod-[12]/);
    expect(s).toContain("CLIENT PAUSE 60000 WRITE");
    expect(nodeSettleScript()).toContain("\nsettle_node\n");
    expect(() => maintainScript({ packages: "data", reboot: "auto", prefer: ["$(reboot)"] })).toThrow();
  });
});

test("the rendered node scripts parse and pass shellcheck", () => {
  for (const text of [
    maintainScript({ packages: "all", reboot: "always", prefer: ["madbase-prod-2"] }),
    nodeSettleScript(),
  ]) {
    expect(spawnSync("bash", ["-n"], { input: text, encoding: "utf8" }).status).toBe(0);
    const checked = spawnSync("shellcheck", ["-S", "warning", "-s", "bash", "-"], { input: text, encoding: "utf8" });
    expect(checked.stdout).toBe("");
  }
});

describe("status shows each node's updates", () => {
  const M = "@@madbase-ops";
  const target: OpsTarget = {
    kind: "local",
    stack: "prod",
    clusterName: "madbase-prod",
    nodes: [{ name: "madbase-prod-1", privateIp: "10.42.1.10", sshHost: "10.42.1.10" }],
    description: "the local cluster of stack prod",
  };
  test("the script reads the timer's textfile and the versions; the table lists them per node", () => {
    expect(nodeStatusScript()).toContain(
      "cat /var/lib/prometheus/node-exporter/madbase-updates.prom 2>/dev/null; /usr/local/sbin/madbase-updates versions",
    );
    const said = [
      `${M} node madbase-prod-1 10.42.1.10 madbase-prod`,
      `${M} updates`,
      `${UPDATES_METRICS.pendingSince}{package="postgresql-17",installed="17.12-0+deb13u1",candidate="17.13-0+deb13u1",held="1",security="1"} 1`,
      `${UPDATES_METRICS.replacedCode}{daemon="postgres"} 1`,
      "version postgresql-17 17.12-0+deb13u1",
      `${M} updates exit 0`,
      `${M} end`,
    ].join("\n");
    const report = parseNodeReport("madbase-prod-1", said, 0);
    expect(report.updates!.pending).toHaveLength(1);
    const text = formatOpsStatus(judgeStatus(target, [report]), target);
    expect(text).toContain(
      "updates:\n  madbase-prod-1: postgresql 17.12-0+deb13u1; held with newer versions: 1 (1 security); security updates pending: 0; daemons on replaced code: postgres; no reboot required",
    );
  });
});
