/**
 * npm run dashboard: writes dashboards/state-pillar-performance.json from core/dashboard.ts.
 * Edit the code, not the JSON; tests/core/dashboard.test.ts fails when the two differ.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { dashboardJson } from "../core/dashboard";

export const DASHBOARD_FILE = path.resolve(__dirname, "..", "dashboards", "state-pillar-performance.json");

if (require.main === module) {
  fs.mkdirSync(path.dirname(DASHBOARD_FILE), { recursive: true });
  fs.writeFileSync(DASHBOARD_FILE, dashboardJson());
  console.log(`wrote ${path.relative(process.cwd(), DASHBOARD_FILE)}`);
}
