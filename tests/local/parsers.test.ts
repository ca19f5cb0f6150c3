/**
 * The runner's readers of what a node says about itself, on recorded output (no node needed):
 * systemd's unit properties, cloud-init's result, the daemons' version lines.
 */
import { parseCloudInitResult, parseSystemctlShow } from "../../local/node-probe";
import { clusterVersions, parseVersions } from "../../local/versions";

test("systemctl show: one block per unit, keyed by its Id", () => {
  const text = "MainPID=412\nId=etcd.service\nActiveState=active\n\nMainPID=0\nId=patroni.service\nActiveState=activating\n";
  expect(parseSystemctlShow(text)).toEqual({
    "etcd.service": { MainPID: "412", Id: "etcd.service", ActiveState: "active" },
    "patroni.service": { MainPID: "0", Id: "patroni.service", ActiveState: "activating" },
  });
});

test("cloud-init: result.json decides done or error; status.json alone means running", () => {
  expect(parseCloudInitResult('{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}', "{}")).toEqual({ status: "done", errors: [] });
  const failed = parseCloudInitResult('{"v1": {"errors": ["(\'scripts-user\', RuntimeError(\'Runparts: 1 failures\'))"]}}', "{}");
  expect(failed.status).toBe("error");
  expect(failed.errors[0]).toContain("scripts-user");
  expect(parseCloudInitResult(undefined, "{}")).toEqual({ status: "running", errors: [] });
  expect(parseCloudInitResult(undefined, undefined)).toEqual({ status: "not running", errors: [] });
});

test("versions: the number in each daemon's own version line", () => {
  const out = [
    "postgres postgres (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)",
    "patroni patroni 4.0.7",
    "etcd etcd Version: 3.5.16",
    "redis Redis server v=8.0.2 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=b843bbd074c0e1da",
    "haproxy HAProxy version 3.0.11-1+deb13u5 2026/11/18 - https://haproxy.org/",
    "pgbackrest pgBackRest 2.55.1",
  ].join("\n");
  expect(parseVersions(out)).toEqual({ postgres: "17.12", patroni: "4.0.7", etcd: "3.5.16", redis: "8.0.2", haproxy: "3.0.11", pgbackrest: "2.55.1" });
  expect(clusterVersions([{ postgres: "17.12" }, { postgres: "17.12" }, { postgres: "17.6" }]).postgres).toBe("17.12 / 17.6");
  expect(clusterVersions([{}]).etcd).toBeNull();
});
