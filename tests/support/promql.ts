/**
 * Reading the dashboard's queries with Prometheus' own PromQL grammar (@prometheus-io/lezer-promql,
 * the parser of Prometheus' web UI): which metrics a query names, with which label matchers, and
 * whether it parses at all. Grafana's variables are replaced by plain values first.
 */
import { parser } from "@prometheus-io/lezer-promql";

/** Grafana's built-in interval variables, and the dashboard's own, as values PromQL accepts. */
export function grafanaToPromQL(expr: string, vars: Record<string, string> = {}): string {
  const values: Record<string, string> = { __rate_interval: "1m", __interval: "30s", __range: "1h", ...vars };
  return expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => values[name] ?? whole);
}

export interface Selector {
  metric: string;
  matchers: { label: string; op: string; value: string }[];
}

export interface ParsedQuery {
  /** Offsets where the grammar could not parse the query; empty for a valid one. */
  errors: number[];
  selectors: Selector[];
}

function unquote(s: string): string {
  return JSON.parse(s.startsWith("'") ? `"${s.slice(1, -1).replace(/"/g, '\\"')}"` : s);
}

export function parsePromQL(query: string): ParsedQuery {
  const tree = parser.parse(query);
  const errors: number[] = [];
  const selectors: Selector[] = [];
  const text = (from: number, to: number) => query.slice(from, to);
  tree.iterate({
    enter(node) {
      if (node.type.isError) errors.push(node.from);
      if (node.name !== "VectorSelector") return;
      const sel: Selector = { metric: "", matchers: [] };
      const name = node.node.getChild("Identifier");
      if (name) sel.metric = text(name.from, name.to);
      const matchers = node.node.getChild("LabelMatchers");
      for (const m of matchers?.getChildren("UnquotedLabelMatcher") ?? []) {
        const label = m.getChild("LabelName");
        const op = m.getChild("MatchOp");
        const value = m.getChild("StringLiteral");
        if (label && op && value)
          sel.matchers.push({
            label: text(label.from, label.to),
            op: text(op.from, op.to),
            value: unquote(text(value.from, value.to)),
          });
      }
      // {__name__="x"} names a metric too; a regex on __name__ would name no single metric.
      const byName = sel.matchers.find((m) => m.label === "__name__");
      if (!sel.metric && byName) sel.metric = byName.op === "=" ? byName.value : `~${byName.value}`;
      selectors.push(sel);
    },
  });
  return { errors, selectors };
}

/** Every metric name a query's selectors name. */
export function metricsOf(query: string): string[] {
  return [...new Set(parsePromQL(query).selectors.map((s) => s.metric))];
}
