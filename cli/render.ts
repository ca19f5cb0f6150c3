/**
 * npm run render -- --stack <dev|prod> [--nodes N] [--profile P] [--stack-dir DIR] --out DIR
 *
 * Renders every node's files from Pulumi.<stack>.yaml with clearly marked placeholder secrets,
 * so the configuration can be read and checked without a Pulumi backend, and the Prometheus scrape
 * configuration for the whole cluster (out/prometheus.yml) with the alert rules it loads (out/alerts.yml).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import {
  ConfigError,
  NODE_FILES,
  NodeFile,
  describeCluster,
  placeholderSecrets,
  placeholderTls,
  renderCluster,
  ALERT_RULES_FILE,
  renderAlertRules,
  renderPrometheusConfig,
  serverPaths,
  SECRET_CONFIG_KEYS,
  loadStackConfig,
} from "../core";

/**
 * The exporters' settings (also inside user-data.yaml) go to `DIR/<node>/exporters/`, so that the
 * node directory holds the daemons' own configuration files, the shape the docs describe.
 */
function renderDirOf(file: NodeFile): "." | "exporters" {
  return file.includes("exporter") ? "exporters" : ".";
}

const USAGE =
  "usage: npm run render -- --stack <dev|prod> [--nodes N] [--profile fast|norm|safe] [--stack-dir DIR] --out DIR\n" +
  "  --stack-dir: the directory holding Pulumi.<stack>.yaml (default: the project's)";

function main(argv: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        stack: { type: "string" },
        nodes: { type: "string" },
        profile: { type: "string" },
        "stack-dir": { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    console.error(`render: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.stack || !values.out) {
    console.error(`render: ${!values.stack ? "--stack" : "--out"} is required\n${USAGE}`);
    return 2;
  }
  try {
    const overrides: Record<string, unknown> = {};
    if (values.nodes !== undefined) overrides.nodeCount = values.nodes;
    if (values.profile !== undefined) overrides.failoverProfile = values.profile;
    const stackDir = values["stack-dir"] === undefined ? undefined : path.resolve(values["stack-dir"]);
    if (stackDir !== undefined && !fs.statSync(stackDir, { throwIfNoEntry: false })?.isDirectory())
      throw new ConfigError("--stack-dir", values["stack-dir"], "use a directory holding Pulumi.<stack>.yaml");
    const { settings, secretsSet } = loadStackConfig(values.stack, overrides, stackDir);
    const { topology, options } = describeCluster(settings);
    const rendered = renderCluster(
      topology,
      options,
      placeholderSecrets(),
      placeholderTls(topology.nodes.map((n) => n.name)),
      () => serverPaths(),
    );
    const out = path.resolve(values.out);
    console.log(
      `Rendering stack ${settings.stack}: ${topology.nodeCount} node(s), plan ${options.plan.name}, profile ${options.profile.name}, subnet ${topology.subnetCidr}`,
    );
    console.log("Secrets and certificates are placeholders (PLACEHOLDER-...): a real stack gets them from Pulumi.");
    const set = SECRET_CONFIG_KEYS.filter((k) => secretsSet[k]);
    console.log(
      `Secret keys the stack file sets (encrypted, not read here): ${set.length > 0 ? set.join(", ") : "none"}`,
    );
    for (const node of topology.nodes) {
      const dir = path.join(out, node.name);
      for (const file of NODE_FILES) {
        const target = path.join(dir, renderDirOf(file), file);
        fs.mkdirSync(path.dirname(target), { recursive: true });
        fs.writeFileSync(target, rendered[node.name][file], { mode: 0o600 });
        console.log(
          `  wrote ${path.relative(process.cwd(), target) || target} (${Buffer.byteLength(rendered[node.name][file])} bytes)`,
        );
      }
    }
    // The scrape configuration for a Prometheus server on the private network (no secret in it).
    const prometheus = path.join(out, "prometheus.yml");
    fs.writeFileSync(prometheus, renderPrometheusConfig(topology));
    console.log(
      `  wrote ${path.relative(process.cwd(), prometheus) || prometheus} (Prometheus scrape configuration for every node)`,
    );
    // The alert rules it loads (rule_files), beside it.
    const alerts = path.join(out, ALERT_RULES_FILE);
    fs.writeFileSync(alerts, renderAlertRules(topology, options));
    console.log(
      `  wrote ${path.relative(process.cwd(), alerts) || alerts} (Prometheus alert rules, loaded by prometheus.yml)`,
    );
    return 0;
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`render: ${e.message}`);
      return 2;
    }
    throw e;
  }
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
