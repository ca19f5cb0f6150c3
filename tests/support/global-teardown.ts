/** After every test: the run's temporary directory (global-setup.ts) and what fixtures left in it. */
import * as fs from "node:fs";
import { TEST_RUN_DIR_ENV } from "./run-dir";

export default async function globalTeardown(): Promise<void> {
  const dir = process.env[TEST_RUN_DIR_ENV];
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}
