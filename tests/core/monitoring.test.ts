/**
 * Metrics as rendered: each exporter listens on its node's private address and nowhere else, logs
 * in with the cluster's own credentials (kept out of everything but the files that need them), and
 * the Prometheus scrape configuration names every endpoint of every node without holding a secret.
 */
import * as yaml from "js-yaml";
import {
  EXPORTER_PACKAGES,
  PORTS,
  SCRAPE_JOBS,
  SECRET_NAMES,
  REDIS_USERS,
  USERS,
  buildTopology,
  maskSecrets,
  postBootstrapSql,
  readEnvFile,
  renderPrometheusConfig,
  serverPaths,
  writtenFiles,
} from "../../core";
import { renderStack } from "../support/fixtures";

describe("exporter files", () => {
  const { files, topology, secrets } = renderStack({ nodeCount: 3 });

  test.each(topology.nodes.map((n) => [n.name, n.privateIp]))("%s: every exporter listens on %s only", (name, ip) => {
    const node = files[name];
    const nodeArgs = readEnvFile(node["node-exporter.env"]).ARGS;
    expect(nodeArgs).toBe(`--web.listen-address=${ip}:${PORTS.nodeExporter}`);
    expect(readEnvFile(node["postgres-exporter.env"]).ARGS).toBe(
      `--web.listen-address=${ip}:${PORTS.postgresExporter}`,
    );
    expect(readEnvFile(node["redis-exporter.env"]).REDIS_EXPORTER_WEB_LISTEN_ADDRESS).toBe(
      `${ip}:${PORTS.redisExporter}`,
    );
    // Nothing binds a wildcard or an empty host (":9100" would be every address).
    const all = node["node-exporter.env"] + node["postgres-exporter.env"] + node["redis-exporter.env"];
    expect(all).not.toMatch(/0\.0\.0\.0|\[::\]|=':|listen-address=:/);
  });

  test("the PostgreSQL exporter logs in as the pg_monitor role, to its own node's PostgreSQL", () => {
    const env = readEnvFile(files["madbase-prod-2"]["postgres-exporter.env"]);
    const dsn = new URL(env.DATA_SOURCE_NAME);
    expect(dsn.username).toBe(USERS.monitoring);
    expect(dsn.password).toBe(secrets.monitoring);
    expect(dsn.host).toBe(`127.0.0.1:${PORTS.postgres}`);
  });

  test("Patroni's post_bootstrap creates that role, with pg_monitor and nothing more", () => {
    const cmd = postBootstrapSql(secrets);
    expect(cmd).toContain(
      `CREATE ROLE ${USERS.monitoring} LOGIN CONNECTION LIMIT 5 PASSWORD '${secrets.monitoring}' IN ROLE pg_monitor`,
    );
    expect(cmd).not.toMatch(new RegExp(`${USERS.monitoring}[^"]*SUPERUSER`));
  });

  test("the Redis exporter logs in to Redis and Sentinel as monitor, its password from a file (never argv or the environment)", () => {
    const node = files["madbase-prod-3"];
    const env = readEnvFile(node["redis-exporter.env"]);
    expect(env.REDIS_ADDR).toBe(`redis://127.0.0.1:${PORTS.redis}`);
    expect(env.REDIS_PASSWORD_FILE).toBe(serverPaths().config["redis-exporter-passwords.json"]);
    expect(env.REDIS_USER).toBe(REDIS_USERS.monitoring);
    for (const name of SECRET_NAMES)
      expect([name, node["redis-exporter.env"].includes(secrets[name])]).toEqual([name, false]);
    expect(JSON.parse(node["redis-exporter-passwords.json"])).toEqual({
      [`redis://${REDIS_USERS.monitoring}@127.0.0.1:${PORTS.redis}`]: secrets.redisMonitoring,
      [`redis://${REDIS_USERS.monitoring}@127.0.0.1:${PORTS.sentinel}`]: secrets.redisMonitoring,
    });
    // The same user on both daemons, and on Redis one that can look but not read a key or CONFIG GET.
    const monitor = (text: string) => text.split("\n").find((l) => l.startsWith(`user ${REDIS_USERS.monitoring} `))!;
    expect(monitor(node["redis-users.acl"])).toMatch(/-@all .*\+info/);
    expect(monitor(node["redis-users.acl"])).not.toMatch(/~|\+get|config/);
    expect(monitor(node["sentinel.conf"])).toContain(`>${secrets.redisMonitoring} -@all `);
  });

  test("HAProxy's /metrics needs the stats login: the auth rule comes before the exporter", () => {
    const cfg = files["madbase-prod-1"]["haproxy.cfg"];
    const stats = cfg.split("\nlisten stats")[1];
    const auth = stats.indexOf("http-request auth");
    const exporter = stats.indexOf("http-request use-service prometheus-exporter");
    expect(auth).toBeGreaterThan(0);
    expect(exporter).toBeGreaterThan(auth);
    expect(cfg).toMatch(
      new RegExp(`userlist stats_users\\n\\s+user ${USERS.haproxyStats} insecure-password ${secrets.haproxyStats}`),
    );
  });

  test("cloud-init installs the exporters, writes their files with the right owners, and starts them", () => {
    const userData = files["madbase-prod-1"]["user-data.yaml"];
    const doc = yaml.load(userData) as { packages: string[] };
    expect(doc.packages).toEqual(expect.arrayContaining([...EXPORTER_PACKAGES]));
    const byPath = Object.fromEntries(writtenFiles(userData).map((f) => [f.path, f]));
    const paths = serverPaths().config;
    expect(byPath[paths["postgres-exporter.env"]]).toMatchObject({
      owner: "root:prometheus",
      permissions: "0640",
      defer: true,
    });
    expect(byPath[paths["redis-exporter-passwords.json"]]).toMatchObject({
      owner: "root:prometheus",
      permissions: "0640",
      defer: true,
    });
    expect(byPath[paths["node-exporter.env"]].content).toBe(files["madbase-prod-1"]["node-exporter.env"]);
    // The first-boot script enables and starts these (on every node, joining or not).
    const env = readEnvFile(byPath["/etc/madbase/node.env"].content);
    for (const unit of EXPORTER_PACKAGES) expect(env.EDGE_UNITS.split(" ")).toContain(unit);
  });
});

describe("prometheus.yml", () => {
  const topology = buildTopology({ stack: "prod", nodeCount: 5, subnetCidr: "10.42.1.0/24" });
  const text = renderPrometheusConfig(topology);
  const doc = yaml.load(text) as { scrape_configs: any[] };

  test("one job per endpoint, each with every node as a target labelled with its name", () => {
    expect(doc.scrape_configs.map((j) => j.job_name)).toEqual(SCRAPE_JOBS.map((j) => `madbase-prod-${j.job}`));
    for (const [i, job] of doc.scrape_configs.entries()) {
      const spec = SCRAPE_JOBS[i];
      expect(job.static_configs).toEqual(
        topology.nodes.map((n) => ({
          targets: [`${n.privateIp}:${spec.port}`],
          labels: { cluster: "madbase-prod", node: n.name },
        })),
      );
    }
  });

  test("covers the three exporters, Patroni, HAProxy (with its login from a file) and the Sentinels", () => {
    const byJob = Object.fromEntries(doc.scrape_configs.map((j) => [j.job_name.replace("madbase-prod-", ""), j]));
    expect(byJob.node.static_configs[0].targets).toEqual(["10.42.1.10:9100"]);
    expect(byJob.postgres.static_configs[0].targets).toEqual(["10.42.1.10:9187"]);
    expect(byJob.redis.static_configs[0].targets).toEqual(["10.42.1.10:9121"]);
    expect(byJob.patroni.static_configs[0].targets).toEqual(["10.42.1.10:8008"]);
    // Patroni asks every caller for a certificate of the CA: Prometheus presents the operator's, from files.
    expect(byJob.patroni).toMatchObject({
      scheme: "https",
      tls_config: {
        ca_file: "/etc/prometheus/madbase-prod-ca.crt",
        cert_file: "/etc/prometheus/madbase-prod-operator.crt",
        key_file: "/etc/prometheus/madbase-prod-operator.key",
      },
    });
    expect(byJob.haproxy.basic_auth).toEqual({
      username: "stats",
      password_file: "/etc/prometheus/madbase-prod-haproxy-stats.password",
    });
    expect(byJob.sentinel).toMatchObject({ metrics_path: "/scrape", params: { target: ["redis://127.0.0.1:26379"] } });
  });

  test("holds no secret and no public address", () => {
    const { secrets } = renderStack({ nodeCount: 5 });
    expect(maskSecrets(text, secrets)).toBe(text);
    for (const name of SECRET_NAMES) expect(text).not.toContain(secrets[name]);
    for (const target of doc.scrape_configs.flatMap((j) => j.static_configs.flatMap((s: any) => s.targets))) {
      expect(target).toMatch(/^10\.42\.1\.\d+:\d+$/);
    }
  });

  test("a bad scrape interval is refused", () => {
    expect(() => renderPrometheusConfig(topology, { scrapeIntervalSeconds: 0 })).toThrow(/whole number of seconds/);
  });
});
