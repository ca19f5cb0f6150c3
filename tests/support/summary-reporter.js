/**
 * Prints one plain closing line, "N passed, N failed, N skipped", after jest's own summary, so
 * any CI reading the last lines sees the count without parsing jest's format. Jest prints its
 * summary after custom reporters run, so the line is written as the process exits.
 */
class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    // A suite that failed to load has no failed tests but must still count as a failure.
    const failed = results.numFailedTests + (results.numRuntimeErrorTestSuites || 0);
    const line = `${results.numPassedTests} passed, ${failed} failed, ${skipped} skipped\n`;
    process.once("exit", () => process.stderr.write(line));
  }
}
module.exports = SummaryReporter;
