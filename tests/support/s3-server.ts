/**
 * An S3-compatible store for the backup tests: s3rver (a fake S3 in plain Node) over HTTPS with a
 * self-signed certificate, as its own process so a test can run it inside a network namespace and
 * stop it (by PID) to simulate an unreachable bucket.
 *
 *   node --import tsx tests/support/s3-server.ts --dir DIR --cert FILE --key FILE --port 443 --bucket NAME
 *
 * The access key pair comes from the environment (S3_ACCESS_KEY, S3_SECRET_KEY), never argv, and
 * is the only one the server accepts: requests are signed and checked like on a real store.
 * Prints "listening <port>" once it accepts connections.
 */
import * as fs from "node:fs";
import { parseArgs } from "node:util";

// s3rver ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3rver = require("s3rver");
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { DUMMY_ACCOUNT } = require("s3rver/lib/models/account");

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dir: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      port: { type: "string", default: "443" },
      address: { type: "string", default: "0.0.0.0" },
      bucket: { type: "string", multiple: true, default: [] },
    },
    strict: true,
  });
  const accessKey = process.env.S3_ACCESS_KEY;
  const secretKey = process.env.S3_SECRET_KEY;
  if (!values.dir || !values.cert || !values.key || !accessKey || !secretKey) {
    console.error("s3-server: --dir, --cert, --key and S3_ACCESS_KEY/S3_SECRET_KEY are required");
    process.exit(2);
  }
  // Only the test's key pair signs requests (the built-in S3RVER pair is revoked).
  DUMMY_ACCOUNT.revokeAccessKey("S3RVER");
  DUMMY_ACCOUNT.createKeyPair(accessKey, secretKey);
  const server = new S3rver({
    address: values.address,
    port: Number(values.port),
    key: fs.readFileSync(values.key),
    cert: fs.readFileSync(values.cert),
    directory: values.dir,
    silent: true,
    // Path-style requests only, as pgBackRest (repo1-s3-uri-style=path) and s3cmd are set up to send.
    vhostBuckets: false,
    configureBuckets: (values.bucket as string[]).map((name) => ({ name })),
  });
  await server.run();
  console.log(`listening ${values.port}`);
  // Stop at once, open connections and all: the tests stop the store to simulate an outage.
  const stop = () => process.exit(0);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

void main().catch((e) => {
  console.error(`s3-server: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
