/**
 * The backup bucket under mocks: declared through an S3 provider pointed at the configured
 * endpoint, kept when the stack is destroyed (retainOnDelete), with the retention the config asks
 * for; or an existing bucket, only used. The S3 keys stay secrets everywhere.
 */
import { expandUserData, writtenFiles } from "../../core";
import { ProgramRun, isSecretEnvelope, ofType, plainStrings, runProgram, stackFileConfig } from "./harness";

const BUCKET = "aws:s3/bucket:Bucket";
const LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration";
const PROVIDER = "pulumi:providers:aws";
const S3 = { backupAccessKey: "HZ1ACCESSKEYEXAMPLE0", backupSecretKey: "hZ2secretKeyExampleValue0123456789abcdef" };

describe("prod with S3 keys", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram({
      stack: "prod",
      config: { ...stackFileConfig("prod"), backupRedisRetentionDays: "10" },
      secretConfig: S3,
    });
    expect(run.error).toBeUndefined();
  });

  test("declares one bucket, retained when the stack is destroyed or the resource replaced", () => {
    const buckets = ofType(run, BUCKET);
    expect(buckets).toHaveLength(1);
    expect(buckets[0].inputs).toMatchObject({ bucket: "madbase-state-prod", forceDestroy: false });
    expect(buckets[0].options.retainOnDelete).toBe(true);
  });

  test("through an S3 provider pointed at the configured endpoint, path-style, without AWS account checks", () => {
    const [provider] = ofType(run, PROVIDER);
    expect(provider.inputs).toMatchObject({
      region: "fsn1",
      s3UsePathStyle: "true",
      skipCredentialsValidation: "true",
      skipRegionValidation: "true",
      skipRequestingAccountId: "true",
    });
    expect(JSON.parse(provider.inputs.endpoints)).toEqual([{ s3: "https://fsn1.your-objectstorage.com" }]);
    // The keys reach the provider as secrets only.
    expect(isSecretEnvelope(provider.raw.accessKey)).toBe(true);
    expect(isSecretEnvelope(provider.raw.secretKey)).toBe(true);
  });

  test("expires Redis snapshots after twice the configured days and never touches pgBackRest's repository", () => {
    const [lifecycle] = ofType(run, LIFECYCLE);
    const rules = lifecycle.inputs.rules as { id: string; filter: { prefix: string }; expiration?: { days: number } }[];
    expect(rules.find((r) => r.id === "redis-snapshots")).toMatchObject({
      status: "Enabled",
      filter: { prefix: "madbase-prod/redis/" },
      expiration: { days: 20 },
    });
    expect(rules.find((r) => r.id === "abort-incomplete-uploads")).toMatchObject({
      abortIncompleteMultipartUpload: { daysAfterInitiation: 7 },
    });
    // Only the Redis rule expires objects, and its prefix is not pgBackRest's.
    expect(rules.filter((r) => r.expiration).map((r) => r.filter.prefix)).toEqual(["madbase-prod/redis/"]);
  });

  test("no key appears in plain outputs or plain resource inputs; the store's location is a plain output", () => {
    const plain = Object.entries(run.outputs).filter(([, o]) => !o.secret);
    const text = JSON.stringify(plain.map(([, o]) => o.value));
    for (const key of Object.values(S3)) expect(text).not.toContain(key);
    expect(run.outputs.backupStore).toMatchObject({
      secret: false,
      value: {
        bucket: "madbase-state-prod",
        endpoint: "fsn1.your-objectstorage.com",
        pgbackrestPath: "/madbase-prod/pgbackrest",
        redisPrefix: "madbase-prod/redis/",
        managedByStack: true,
      },
    });
    for (const r of run.resources) {
      const leaked = Object.values(S3).filter((k) => plainStrings(r.raw).join("\n").includes(k));
      expect([r.type, r.name, leaked]).toEqual([r.type, r.name, []]);
    }
    expect(run.logs.join("\n")).not.toContain(S3.backupSecretKey);
  });

  test("every node gets the backup scripts and timers in its cloud-init", () => {
    for (const server of ofType(run, "hcloud:index/server:Server")) {
      const userData = server.inputs.userData as string;
      expect(writtenFiles(userData).map((f) => f.path)).toContain("/usr/local/sbin/madbase-backup");
      // madbase-first-boot enables and starts these timers (node.env's NODE_TIMERS).
      expect(expandUserData(userData)).toContain(
        'NODE_TIMERS="madbase-pg-backup-first.timer madbase-pg-backup-full.timer madbase-pg-backup-diff.timer madbase-redis-snapshot.timer madbase-pg-metrics.timer madbase-tls-metrics.timer"',
      );
    }
  });
});

test("an existing bucket (backupCreateBucket: false) is only used: no provider, no bucket, the nodes still get the keys", async () => {
  const run = await runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), backupCreateBucket: "false", backupBucket: "ops-backups" },
    secretConfig: S3,
  });
  expect(run.error).toBeUndefined();
  expect(ofType(run, BUCKET)).toEqual([]);
  expect(ofType(run, PROVIDER)).toEqual([]);
  expect(run.outputs.backupStore.value).toMatchObject({ bucket: "ops-backups", managedByStack: false });
  expect(expandUserData(ofType(run, "hcloud:index/server:Server")[0].inputs.userData)).toContain(
    "repo1-s3-bucket=ops-backups",
  );
});

test("without S3 keys the bucket is not declared and the operator is told why", async () => {
  const run = await runProgram({ stack: "dev", config: stackFileConfig("dev") });
  expect(run.error).toBeUndefined();
  expect(ofType(run, BUCKET)).toEqual([]);
  expect(run.logs.join("\n")).toMatch(
    /the backup bucket madbase-state-dev is not declared: it needs madbase-state:backupAccessKey and backupSecretKey/,
  );
});

test("a retention the config cannot use stops the program before anything is declared", async () => {
  const run = await runProgram({
    stack: "prod",
    config: { ...stackFileConfig("prod"), backupRedisRetentionDays: "0" },
    secretConfig: S3,
  });
  expect(run.error?.message).toMatch(
    /^madbase-state:backupRedisRetentionDays: "?0"? is not allowed; use a whole number of days to keep Redis snapshots, 1 to 365/,
  );
  expect(run.resources).toHaveLength(0);
});
