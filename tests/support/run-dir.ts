import * as os from "node:os";
import * as path from "node:path";

/** The environment variable naming the test run's temporary directory (made by global-setup.ts). */
export const TEST_RUN_DIR_ENV = "MADBASE_TEST_RUN_DIR";

/** In the run's directory: one JSON line per cluster boot (file, seconds), for the summary. */
export const BOOTS_FILE = "boots.jsonl";

/**
 * Where the run's shared cluster lives (tests/local/harness.ts sharedCluster): network "lt0",
 * subnet 10.42.100.0/24, next to the test files' own (testLocation(n): lt<n>, 10.42.10<n>.0/24).
 */
export const SHARED_CLUSTER = {
  root: path.join(os.tmpdir(), "madbase-local-test-shared"),
  networkId: "lt0",
  subnetCidr: "10.42.100.0/24",
};
