/**
 * How often the sidecar is restarted after a crash before we stop and tell the user: a crash loop must not
 * spin forever, but one crash an hour should not need a click.
 */
export class RestartBudget {
  private readonly crashes: number[] = [];

  constructor(
    readonly maxRestarts = 4,
    readonly windowMs = 3 * 60_000,
  ) {}

  /** Records a crash at `now`; true when another automatic restart is allowed. */
  allowRestart(now: number): boolean {
    while (this.crashes.length > 0 && now - this.crashes[0] > this.windowMs) this.crashes.shift();
    this.crashes.push(now);
    return this.crashes.length <= this.maxRestarts;
  }

  /** Crashes counted in the current window (the restart in progress is number `used`). */
  get used(): number {
    return this.crashes.length;
  }

  /** "stopped 5 times in 3 minutes": why the automatic restarts ended. */
  describeExhausted(): string {
    return `the sidecar stopped ${this.crashes.length} times in ${Math.round(this.windowMs / 60_000)} minutes and was not restarted again`;
  }

  /** A manual restart starts a fresh budget. */
  reset(): void {
    this.crashes.length = 0;
  }
}
