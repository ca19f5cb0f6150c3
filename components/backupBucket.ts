import * as pulumi from "@pulumi/pulumi";
import * as aws from "@pulumi/aws";
import { pgbackrestPrefix, redisSnapshotPrefix } from "../core";
import { BackupCredentials } from "./stackConfig";

/** Days after which an unfinished multipart upload (a backup cut off mid-file) is cleaned up. */
export const ABORT_INCOMPLETE_UPLOAD_DAYS = 7;

export interface BackupBucketArgs {
  bucket: string;
  /** Host name of the S3 endpoint, without scheme (Hetzner: <location>.your-objectstorage.com). */
  endpoint: string;
  region: string;
  clusterName: string;
  /** false: the bucket exists already; the stack only uses it (no provider, nothing declared). */
  create: boolean;
  redisRetentionDays: number;
  /** The S3 keys; without them the bucket cannot be created (the operator is warned). */
  credentials?: BackupCredentials;
}

/**
 * The S3 bucket that holds the cluster's backups: pgBackRest's repository under
 * `<cluster>/pgbackrest` and the Redis snapshots under `<cluster>/redis`.
 *
 * hcloud has no bucket resource; Hetzner Object Storage speaks S3, so the AWS provider declares it,
 * pointed at the configured endpoint (path-style, no AWS account, region or credential checks).
 * Any S3-compatible store works the same way.
 */
export class BackupBucket extends pulumi.ComponentResource {
  readonly bucketName: string;
  readonly endpoint: string;
  /** Declared only when the stack creates the bucket. */
  readonly bucket?: aws.s3.Bucket;
  readonly lifecycle?: aws.s3.BucketLifecycleConfiguration;
  /** Where the cluster's backups are, for the stack's outputs (no keys). */
  readonly location: {
    bucket: string;
    endpoint: string;
    region: string;
    pgbackrestPath: string;
    redisPrefix: string;
    managedByStack: boolean;
  };

  constructor(name: string, args: BackupBucketArgs, opts?: pulumi.ComponentResourceOptions) {
    super("madbase-state:index:BackupBucket", name, {}, opts);
    this.bucketName = args.bucket;
    this.endpoint = args.endpoint;
    const create = args.create && !!args.credentials;
    this.location = {
      bucket: args.bucket,
      endpoint: args.endpoint,
      region: args.region,
      pgbackrestPath: `/${pgbackrestPrefix(args.clusterName)}`,
      redisPrefix: `${redisSnapshotPrefix(args.clusterName)}/`,
      managedByStack: create,
    };
    if (args.create && !args.credentials) {
      pulumi.log.warn(
        `the backup bucket ${args.bucket} is not declared: it needs madbase-state:backupAccessKey and backupSecretKey. ` +
          "Set both, or create the bucket yourself and set madbase-state:backupCreateBucket to false.",
        this,
      );
    }
    if (create && args.credentials) {
      const provider = new aws.Provider(
        `${name}-s3`,
        {
          region: args.region,
          accessKey: args.credentials.accessKey,
          secretKey: args.credentials.secretKey,
          endpoints: [{ s3: `https://${args.endpoint}` }],
          s3UsePathStyle: true,
          skipCredentialsValidation: true,
          skipMetadataApiCheck: true,
          skipRegionValidation: true,
          skipRequestingAccountId: true,
        },
        { parent: this },
      );
      // retainOnDelete: `pulumi destroy`, a replacement or a rename must never delete the backups.
      // The bucket holds the only copy of the data that outlives the servers, so the stack lets go
      // of it (its state forgets the bucket) and the objects stay; deleting them is a deliberate,
      // manual act. forceDestroy stays false for the same reason.
      this.bucket = new aws.s3.Bucket(
        `${name}-bucket`,
        { bucket: args.bucket, forceDestroy: false },
        { parent: this, provider, retainOnDelete: true },
      );
      // Retention. pgBackRest expires its own backups and WAL (repo1-retention-full): a bucket rule
      // over its repository could delete a file a kept backup still needs, so there is none. The
      // snapshot job deletes Redis snapshots older than the configured days (never the newest);
      // this rule, at twice that age, only catches what the job failed to delete.
      this.lifecycle = new aws.s3.BucketLifecycleConfiguration(
        `${name}-lifecycle`,
        {
          bucket: this.bucket.bucket,
          rules: [
            {
              id: "redis-snapshots",
              status: "Enabled",
              filter: { prefix: this.location.redisPrefix },
              expiration: { days: 2 * args.redisRetentionDays },
            },
            {
              id: "abort-incomplete-uploads",
              status: "Enabled",
              filter: { prefix: "" },
              abortIncompleteMultipartUpload: { daysAfterInitiation: ABORT_INCOMPLETE_UPLOAD_DAYS },
            },
          ],
        },
        { parent: this, provider },
      );
    }
    this.registerOutputs({ bucket: args.bucket });
  }
}
