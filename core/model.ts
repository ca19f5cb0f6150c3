/**
 * What a cluster is rendered from: the options every node shares and one node's render input.
 * Plain types, imported by the renderer and by what it uses (backups, Patroni, alerts), so none of
 * them imports the renderer for a type.
 */
import type { NodeFile, NodePaths } from "./paths";
import type { PatroniClientCertificates } from "./patroni-client-certificates";
import type { Plan } from "./plans";
import type { PoolMode } from "./pooler";
import type { FailoverProfile } from "./profiles";
import type { ClusterSecrets } from "./secrets";
import type { ClusterTls } from "./tls";
import type { NodeSpec, Topology } from "./topology";

/** Where pgBackRest keeps the repository: any S3-compatible store. */
export interface BackupTarget {
  bucket: string;
  /** Host name (no scheme); pgBackRest always speaks TLS to it. */
  endpoint: string;
  region: string;
  retentionFull: number;
  /** Days of Redis snapshots kept (never the newest one); 7 when absent. */
  redisRetentionDays?: number;
  verifyTls: boolean;
  /** Only when the store is not on 443 (a local test store). */
  port?: number;
  /**
   * A directory every node shares, used instead of the bucket (the local runner: WAL archiving and
   * pg_rewind's archive step must work without an S3 store on this machine).
   */
  localRepoPath?: string;
  /**
   * false: PostgreSQL archives nothing (archive_command `/bin/true`, WAL recycled at once), for a
   * stack without real S3 keys; see archivingDecision (core/alerts.ts). On when absent.
   */
  archiving?: boolean;
}

/** Settings that are the same for every node of the cluster. */
export interface ClusterOptions {
  plan: Plan;
  profile: FailoverProfile;
  synchronousMode: boolean;
  /** PgBouncer's pool_mode on every node; `transaction` when absent (core/pooler.ts). */
  poolMode?: PoolMode;
  backup: BackupTarget;
  /** Memory to size PostgreSQL and Redis for; defaults to the plan's. Local runs pass less. */
  memoryMb?: number;
  /** The data volume's size, which bounds the WAL archive queue; DEFAULT_VOLUME_GB when absent. */
  volumeSizeGb?: number;
  /** Whether Patroni asks every caller for a certificate; `required` when absent (core/patroni-client-certificates.ts). */
  patroniClientCertificates?: PatroniClientCertificates;
}

export interface NodeRenderInput {
  topology: Topology;
  node: NodeSpec;
  options: ClusterOptions;
  secrets: ClusterSecrets;
  /** The cluster's certificates (core/tls.ts): the CA's and every rendered node's pair. */
  tls: ClusterTls;
  paths: NodePaths;
  /** `existing` for a member joining a running etcd cluster (scaling); `new` when the cluster is created. */
  etcdInitialClusterState?: "new" | "existing";
  /** The Redis master to replicate from; the first node when the cluster is created. */
  redisMasterIp?: string;
}

export type RenderedNode = Record<NodeFile, string>;
