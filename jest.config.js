/** Tests live under tests/, one folder per layer (core, daemons, stack, scale, ci, local). */

module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/tests"],
  transform: { "^.+\\.ts$": "ts-jest" },
  testTimeout: 60000,
  globalSetup: "<rootDir>/tests/support/global-setup.ts",
  globalTeardown: "<rootDir>/tests/support/global-teardown.ts",
  reporters: ["default", "<rootDir>/tests/support/summary-reporter.js"],
  testSequencer: "<rootDir>/tests/support/sequencer.js",
};
