/**
 * After jest's own summary: each test file's time and cluster boots, in the order they ran, then one
 * plain closing line, "N passed, N failed, N skipped", so any CI reading the last lines sees the
 * count without parsing jest's format. Jest prints its summary after custom reporters run, so the
 * lines are written as the process exits. The boots come from the run's directory
 * (tests/local/harness.ts bootCluster), read here before the global teardown removes it.
 */
const fs = require("node:fs");
const path = require("node:path");

class SummaryReporter {
  constructor(globalConfig) {
    this.rootDir = globalConfig.rootDir;
    this.files = [];
  }

  onTestResult(_test, result) {
    const { start, end } = result.perfStats;
    this.files.push({ file: path.relative(this.rootDir, result.testFilePath), seconds: (end - start) / 1000 });
  }

  onRunComplete(_contexts, results) {
    const boots = new Map();
    const dir = process.env.MADBASE_TEST_RUN_DIR;
    const bootsFile = dir && path.join(dir, "boots.jsonl");
    if (bootsFile && fs.existsSync(bootsFile))
      for (const line of fs.readFileSync(bootsFile, "utf8").split("\n").filter(Boolean)) {
        const { file } = JSON.parse(line);
        boots.set(file, (boots.get(file) ?? 0) + 1);
      }
    const width = Math.max(4, ...this.files.map((f) => f.file.length));
    const rows = this.files.map(
      (f) =>
        `${f.file.padEnd(width)} ${f.seconds.toFixed(1).padStart(7)} s ${String(boots.get(f.file) ?? 0).padStart(3)}`,
    );
    const totalSeconds = this.files.reduce((sum, f) => sum + f.seconds, 0);
    const totalBoots = [...boots.values()].reduce((sum, n) => sum + n, 0);
    const table = [
      `${"file".padEnd(width)} ${"time".padStart(9)} ${"boots"}`,
      ...rows,
      `${"all files".padEnd(width)} ${totalSeconds.toFixed(1).padStart(7)} s ${String(totalBoots).padStart(3)}`,
    ].join("\n");
    const skipped = results.numPendingTests + results.numTodoTests;
    // A suite that failed to load has no failed tests but must still count as a failure.
    const failed = results.numFailedTests + (results.numRuntimeErrorTestSuites || 0);
    const line = `${results.numPassedTests} passed, ${failed} failed, ${skipped} skipped\n`;
    process.once("exit", () => process.stderr.write(`\n${table}\n\n${line}`));
  }
}
module.exports = SummaryReporter;
