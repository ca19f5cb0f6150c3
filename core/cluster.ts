import type { ClusterOptions } from "./model";
import { getPlan } from "./plans";
import { checkPoolMode } from "./pooler";
import { getProfile } from "./profiles";
import { StackSettings } from "./settings";
import { Topology, buildTopology } from "./topology";

/** The topology and cluster-wide options a validated stack config describes. */
export function describeCluster(settings: StackSettings): { topology: Topology; options: ClusterOptions } {
  const topology = buildTopology({
    stack: settings.stack,
    nodeCount: settings.nodeCount,
    subnetCidr: settings.subnetCidr,
  });
  const options: ClusterOptions = {
    plan: getPlan(settings.plan),
    profile: getProfile(settings.failoverProfile),
    synchronousMode: settings.synchronousMode,
    poolMode: checkPoolMode(settings.poolMode, "madbase-state:poolMode"),
    volumeSizeGb: settings.volumeSizeGb,
    backup: {
      bucket: settings.backupBucket,
      endpoint: settings.backupEndpoint,
      region: settings.backupRegion,
      retentionFull: settings.backupRetentionFull,
      redisRetentionDays: settings.backupRedisRetentionDays,
      verifyTls: true,
    },
  };
  return { topology, options };
}

/** The Hetzner server type for a stack: the override, or the plan's default. */
export function serverTypeFor(settings: StackSettings): string {
  return settings.serverType ?? getPlan(settings.plan).serverType;
}
