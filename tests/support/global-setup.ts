/**
 * Before any test: the node image every end-to-end test boots, built once (about a minute on a
 * new machine, with mmdebstrap's progress on stderr) and reused from its cache afterwards, so no
 * single test's timeout has to hold an image build.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ensureImage } from "../../local/image";
import { TEST_RUN_DIR_ENV } from "./run-dir";

export default async function globalSetup(): Promise<void> {
  // One directory for the run's shared fixtures (fixtures.ts): the test files' own process objects
  // never see the real process exit, so files left for "exit" stayed behind; global-teardown.ts
  // removes this one. Set here, it reaches every worker's environment.
  process.env[TEST_RUN_DIR_ENV] = fs.mkdtempSync(path.join(os.tmpdir(), "madbase-test-run-"));
  if (process.getuid?.() !== 0) return; // the end-to-end tests need root and say so themselves
  const root = await ensureImage({ onProgress: (line) => process.stderr.write(`${line}\n`) });
  process.stderr.write(`node image: ${root}\n`);
}
