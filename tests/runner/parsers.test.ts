/**
 * The local runner's readers of what a node says about itself, on recorded output (no node and
 * no root needed): systemd's unit properties, cloud-init's result, the daemons' version lines,
 * HAProxy's show stat, Redis's INFO and the exporters' metrics.
 */
import { metricNames, parseMetrics, sampleSum, sampleValue } from "../../local/metrics";
import { parseCloudInitResult, parseSystemctlShow } from "../../local/node-probe";
import { parseInfo, parseShowStat, reachableEntries } from "../../local/probes";
import { clusterVersions, parseVersions } from "../../local/versions";

test("systemctl show: one block per unit, keyed by its Id", () => {
  const text =
    "MainPID=412\nId=etcd.service\nActiveState=active\n\nMainPID=0\nId=patroni.service\nActiveState=activating\n";
  expect(parseSystemctlShow(text)).toEqual({
    "etcd.service": { MainPID: "412", Id: "etcd.service", ActiveState: "active" },
    "patroni.service": { MainPID: "0", Id: "patroni.service", ActiveState: "activating" },
  });
});

test("cloud-init: result.json decides done or error; status.json alone means running", () => {
  expect(parseCloudInitResult('{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}', "{}")).toEqual({
    status: "done",
    errors: [],
  });
  const failed = parseCloudInitResult(
    '{"v1": {"errors": ["(\'scripts-user\', RuntimeError(\'Runparts: 1 failures\'))"]}}',
    "{}",
  );
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
  expect(parseVersions(out)).toEqual({
    postgres: "17.12",
    patroni: "4.0.7",
    etcd: "3.5.16",
    redis: "8.0.2",
    haproxy: "3.0.11",
    pgbackrest: "2.55.1",
  });
  expect(clusterVersions([{ postgres: "17.12" }, { postgres: "17.12" }, { postgres: "17.6" }]).postgres).toBe(
    "17.12 / 17.6",
  );
  expect(clusterVersions([{}]).etcd).toBeNull();
});

test("HAProxy show stat: one row per server with its check status; the FRONTEND and BACKEND rows are not servers", () => {
  const csv = [
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight",
    "stats,FRONTEND,,,1,1,3000,5,0,0,0,0,0,,,,,OPEN,",
    "postgres_primary,madbase-prod-1,0,0,2,4,,90,0,0,,0,,0,0,0,0,UP,1",
    "postgres_primary,madbase-prod-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1",
    "postgres_primary,madbase-prod-3,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN 1/2,1",
    "postgres_primary,BACKEND,0,0,2,4,300,90,0,0,0,0,,0,0,0,0,UP,1",
    "",
  ].join("\n");
  expect(parseShowStat(csv)).toEqual([
    { proxy: "postgres_primary", server: "madbase-prod-1", status: "UP" },
    { proxy: "postgres_primary", server: "madbase-prod-2", status: "DOWN" },
    { proxy: "postgres_primary", server: "madbase-prod-3", status: "DOWN 1/2" },
  ]);
  // An answer that is not the CSV (a socket error, an empty reply) has no servers.
  expect(parseShowStat("Unknown command.\n")).toEqual([]);
  expect(parseShowStat("")).toEqual([]);
});

test("Redis INFO: fields of its CRLF lines, section headers skipped, values kept whole (an address has colons too)", () => {
  const text =
    "# Replication\r\nrole:slave\r\nmaster_host:10.42.1.10\r\nmaster_port:6380\r\nmaster_link_status:up\r\nslave0:ip=fd00::1,port=6380,state=online\r\n";
  expect(parseInfo(text)).toEqual({
    role: "slave",
    master_host: "10.42.1.10",
    master_port: "6380",
    master_link_status: "up",
    slave0: "ip=fd00::1,port=6380,state=online",
  });
});

test("Prometheus text: samples with their labels (escapes undone) and values; comments skipped; sums and lookups", () => {
  const text = [
    "# HELP pg_up Whether the last scrape could reach PostgreSQL.",
    "# TYPE pg_up gauge",
    "pg_up 1",
    'haproxy_server_status{proxy="postgres_primary",server="madbase-prod-1",state="UP"} 1',
    'haproxy_server_status{proxy="postgres_primary",server="madbase-prod-2",state="DOWN"} 0',
    'odd_label{text="a \\"quoted\\" word\\nand a line"} 2.5e3',
    "process_start_time_seconds 1.7e9",
  ].join("\n");
  const samples = parseMetrics(text);
  expect(samples).toHaveLength(5);
  expect(sampleValue(samples, "pg_up")).toBe(1);
  expect(sampleValue(samples, "haproxy_server_status", { server: "madbase-prod-2" })).toBe(0);
  expect(samples.find((s) => s.name === "odd_label")).toEqual({
    name: "odd_label",
    labels: { text: 'a "quoted" word\nand a line' },
    value: 2500,
  });
  expect(sampleSum(samples, "haproxy_server_status")).toBe(1);
  expect(sampleSum(samples, "missing")).toBeUndefined();
  expect(metricNames(text)).toEqual(
    new Set(["pg_up", "haproxy_server_status", "odd_label", "process_start_time_seconds"]),
  );
});

test("Sentinel's replicas and Sentinels: the addresses whose flags show no trouble", () => {
  // As ioredis returns SENTINEL REPLICAS / SENTINELS: one flat field-value list per entry.
  const entry = (ip: string, flags: string) => ["name", `${ip}:6380`, "ip", ip, "port", "6380", "flags", flags];
  const reply = [
    entry("10.0.0.2", "slave"),
    entry("10.0.0.3", "s_down,slave,disconnected"),
    entry("10.0.0.4", "sentinel,master_down"),
    entry("10.0.0.5", "sentinel,o_down"),
    ["name", "no-ip", "flags", "slave"],
  ];
  expect(reachableEntries(reply)).toEqual(["10.0.0.2", "10.0.0.4"]);
  expect(reachableEntries([])).toEqual([]);
  // A Sentinel that did not answer.
  expect(reachableEntries(undefined)).toEqual([]);
});
