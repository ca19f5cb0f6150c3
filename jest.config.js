/** Tests live under tests/, one folder per layer (core, stack, daemons, local). */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/tests"],
  transform: { "^.+\\.ts$": "ts-jest" },
  testTimeout: 60000,
};
