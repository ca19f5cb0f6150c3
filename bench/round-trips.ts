/** Round-trip timing shared by the benchmarks (bench/run.ts, bench/tls.ts). */

export interface RoundTrips {
  medianUs: number;
  p90Us: number;
}

/** The middle value (the mean of the two middle ones for an even count); NaN for none. */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Median and 90th percentile of `rounds` sequential round trips, in µs, after 50 to warm the connection and the caches. */
export async function roundTrips(rounds: number, once: () => Promise<unknown>): Promise<RoundTrips> {
  for (let i = 0; i < 50; i++) await once();
  const us: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t = process.hrtime.bigint();
    await once();
    us.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  us.sort((a, b) => a - b);
  return { medianUs: median(us), p90Us: us[Math.floor(us.length * 0.9)] };
}
