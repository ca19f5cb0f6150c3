/**
 * After every test: the run's shared cluster (tests/local/harness.ts sharedCluster; kept with
 * MADBASE_TEST_KEEP=1), then the run's temporary directory (global-setup.ts) and what fixtures left
 * in it.
 */
import * as fs from "node:fs";
import { down } from "../../local/cluster";
import { readState } from "../../local/state";
import { SHARED_CLUSTER, TEST_RUN_DIR_ENV } from "./run-dir";

export default async function globalTeardown(): Promise<void> {
  if (readState(SHARED_CLUSTER.root)) {
    if (process.env.MADBASE_TEST_KEEP === "1")
      process.stderr.write(
        `MADBASE_TEST_KEEP=1: the shared cluster was left running; remove with MADBASE_LOCAL_ROOT=${SHARED_CLUSTER.root} MADBASE_LOCAL_NET=${SHARED_CLUSTER.networkId} npm run local -- down\n`,
      );
    else await down(SHARED_CLUSTER);
  }
  const dir = process.env[TEST_RUN_DIR_ENV];
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}
