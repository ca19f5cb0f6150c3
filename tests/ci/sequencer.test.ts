/**
 * The order `npm test` runs the files in (tests/support/sequencer.js): unit layers first, then the
 * daemons, then end-to-end files with clusters of their own, then the shared cluster's files, those
 * that leave it as they found it before those that break it.
 */
import * as path from "node:path";

// eslint-disable-next-line @typescript-eslint/no-require-imports
const LayerSequencer = require("../support/sequencer.js");

const ROOT = path.resolve(__dirname, "..", "..");
const asTest = (file: string) => ({ path: path.join(ROOT, file), context: { config: { rootDir: ROOT } } });

test("unit layers, daemons, own clusters, then the shared cluster: left as found before broken", () => {
  const files = [
    "tests/local/redis-failover.test.ts",
    "tests/local/backup.test.ts",
    "tests/daemons/render-checks.test.ts",
    "tests/local/forms.test.ts",
    "tests/stack/config.test.ts",
    "tests/ci/shell.test.ts",
    "tests/core/urls.test.ts",
    "tests/local/etcd-outage.test.ts",
    "tests/local/auth.test.ts",
  ];
  const sorted = new LayerSequencer().sort(files.map(asTest)).map((t: { path: string }) => path.relative(ROOT, t.path));
  expect(sorted).toEqual([
    "tests/ci/shell.test.ts",
    "tests/core/urls.test.ts",
    "tests/stack/config.test.ts",
    "tests/daemons/render-checks.test.ts",
    "tests/local/backup.test.ts",
    "tests/local/auth.test.ts",
    "tests/local/forms.test.ts",
    "tests/local/etcd-outage.test.ts",
    "tests/local/redis-failover.test.ts",
  ]);
});
