/** The environment variable naming the test run's temporary directory (made by global-setup.ts). */
export const TEST_RUN_DIR_ENV = "MADBASE_TEST_RUN_DIR";
