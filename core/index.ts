/**
 * The render core: plain functions from a cluster description to the files each node runs.
 * Nothing here imports Pulumi, so the Pulumi program, the local runner and the tests share it.
 */
export * from "./errors";
export * from "./plans";
export * from "./profiles";
export * from "./topology";
export * from "./settings";
export * from "./stack-config";
export * from "./stack-file";
export * from "./secrets";
export * from "./tls";
export * from "./urls";
export * from "./packages";
export * from "./paths";
export * from "./model";
export * from "./render";
export * from "./templates";
export * from "./userdata";
export * from "./backup";
export * from "./cluster";
export * from "./monitoring";
export * from "./scale";
export * from "./sequence";
export * from "./patroni";
export * from "./patroni-client-certificates";
export * from "./ssh-keys";
export * from "./stack-change";
export * from "./alerts";
export * from "./pooler";
export * from "./hetzner";
export * from "./maintenance";
