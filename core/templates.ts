/**
 * The one Handlebars setup every rendered file goes through (templates/<name>.hbs): its helpers,
 * the script parts other scripts include, and compilation in strict mode.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import Handlebars from "handlebars";
import * as yaml from "js-yaml";

export const TEMPLATE_DIR = path.resolve(__dirname, "..", "templates");

const hb = Handlebars.create();
hb.registerHelper("json", (value: unknown) => JSON.stringify(value));
hb.registerHelper("hostPort", (host: string, port: number) => `${host}:${port}`);
hb.registerHelper("concat", (...args: unknown[]) => args.slice(0, -1).join(""));
// Strings always quoted: Patroni reads YAML 1.1, where a bare `on` or `off` is a boolean.
hb.registerHelper("yaml", (value: unknown) => yaml.dump(value, { forceQuotes: true, lineWidth: -1 }));
hb.registerHelper("indent", (text: string, width: number) => {
  const pad = " ".repeat(width);
  return text
    .replace(/\n$/, "")
    .split("\n")
    .map((line) => (line === "" ? "" : pad + line))
    .join("\n");
});

/** The parts of madbase-backup (`{{> store}}`, ...): each a section of the one backup script. */
const SCRIPT_PARTS = [
  "store",
  "pg-backup",
  "pg-restore",
  "redis-snapshot",
  "redis-restore",
  "pgbackrest-archive-push",
  "pg-metrics",
];
for (const part of SCRIPT_PARTS) {
  hb.registerPartial(part, fs.readFileSync(path.join(TEMPLATE_DIR, "scripts", `${part}.sh.hbs`), "utf8"));
}

const compiled = new Map<string, Handlebars.TemplateDelegate>();
/** Templates compile in strict mode: a value the model lacks is an error, never an empty string. */
export function template(name: string): Handlebars.TemplateDelegate {
  let t = compiled.get(name);
  if (!t) {
    t = hb.compile(fs.readFileSync(path.join(TEMPLATE_DIR, `${name}.hbs`), "utf8"), { strict: true, noEscape: true });
    compiled.set(name, t);
  }
  return t;
}

/** A shell script kept as a real `.sh` file (no rendered value in it), as it is. */
export function plainScript(name: string): string {
  return fs.readFileSync(path.join(TEMPLATE_DIR, "scripts", name), "utf8");
}

/**
 * A script of templates/scripts: `<name>.sh` as it is when it takes no rendered value (a real shell
 * file, read by shellcheck as it is), else `<name>.sh.hbs` rendered with the model.
 */
export function renderScript(name: string, model: object): string {
  const plain = path.join(TEMPLATE_DIR, "scripts", `${name}.sh`);
  return fs.existsSync(plain) ? fs.readFileSync(plain, "utf8") : template(`scripts/${name}.sh`)(model);
}
