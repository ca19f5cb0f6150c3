/**
 * What the scale API drives. Two implementations: a Pulumi stack through the Automation API
 * (Hetzner) and the local runner (this machine). Both scale by node count and stream progress.
 */
export interface ScaleBackend {
  /** Shown in job records: "pulumi:prod", "local". */
  readonly name: string;
  /** The node count the backend runs now. */
  currentCount(): Promise<number>;
  /** Moves the cluster to `target` nodes, reporting each step through `log`. Throws on failure. */
  scale(target: number, log: (line: string) => void): Promise<void>;
}
