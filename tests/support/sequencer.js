/**
 * The order the test files run in (one at a time, `--runInBand`):
 *  1. the unit layers (ci, core, runner, stack, scale, ops): a wrong render fails in seconds;
 *  2. the real daemons without a cluster (daemons);
 *  3. the end-to-end files that boot clusters of their own (local);
 *  4. the files on the run's shared cluster (tests/local/harness.ts sharedCluster): first those
 *     that hand it back as they found it, then those that break it and wait for it to heal, so
 *     the shared cluster boots once and is removed right after them by the global teardown.
 * Within a group, by path: the same order on every machine.
 */
const fs = require("node:fs");
const path = require("node:path");
const Sequencer = require("@jest/test-sequencer").default;

const LAYERS = ["ci", "core", "runner", "stack", "scale", "ops", "daemons", "local"];

/** 0: a cluster of its own or none; 1: the shared cluster, left as found; 2: the shared cluster, broken and healed. */
function sharedRank(file) {
  const m = /sharedCluster\(\{\s*breaks:\s*(true|false)/.exec(fs.readFileSync(file, "utf8"));
  return m ? (m[1] === "true" ? 2 : 1) : 0;
}

class LayerSequencer extends Sequencer {
  sort(tests) {
    const key = (t) => {
      const layer = path.relative(path.join(t.context.config.rootDir, "tests"), t.path).split(path.sep)[0];
      const index = LAYERS.indexOf(layer);
      return [index === -1 ? LAYERS.length : index, sharedRank(t.path), t.path];
    };
    const keyed = tests.map((t) => ({ t, k: key(t) }));
    keyed.sort((a, b) => a.k[0] - b.k[0] || a.k[1] - b.k[1] || (a.k[2] < b.k[2] ? -1 : a.k[2] > b.k[2] ? 1 : 0));
    return keyed.map(({ t }) => t);
  }
}
module.exports = LayerSequencer;
