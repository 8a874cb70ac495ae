/**
 * Workload benchmark: `node --import tsx bench/workload.bench.ts [--seed N] [--out docs/bench]`
 *
 * VRAM Relay (the real arbiter, planner and estimators) against the usual ways of sharing a GPU between a local LLM
 * and an image generator, on the same seeded 40-minute session, on a simulated device of 8, 12, 16 and 24 GB with
 * the same true cost model (bench/workload/). Prints a table per budget and VRAM Relay's targets (PASS/MISS; a miss
 * is reported, not thrown), and writes <out>/workload.md and <out>/workload.svg.
 *
 * Options: --seed N (default 1); --out DIR (default docs/bench); --sd-build current|older (default current);
 * --extra-seeds N (default 4: seeds N+1..N+4 are run too and their target verdicts listed; 0 to skip);
 * --cpu-speed F (default 1: the CPU's LLM speed as a share of the assumed 90 prompt / 7 generated tokens a second,
 * 0.5 for a CPU half as fast); --no-older (skip the older-build table); --no-write (print only).
 */

import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { runBenchmark } from './workload/benchmark';
import { consoleReport, markdownReport, svgChart } from './workload/report';
import type { SdBuild } from './workload/truth';

function usage(problem: string): never {
  console.error(`${problem}\nUsage: node --import tsx bench/workload.bench.ts [--seed N] [--out DIR] [--sd-build current|older] [--extra-seeds N] [--cpu-speed F] [--no-older] [--no-write]`);
  process.exit(2);
}

function wholeNumber(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) usage(`--${name} must be a whole number of 0 or more, not ${JSON.stringify(value)}.`);
  return n;
}

/** Writes next to the target, then renames: a reader never sees half a file. */
async function writeAtomically(file: string, content: string): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, content, 'utf8');
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        seed: { type: 'string' },
        out: { type: 'string' },
        'sd-build': { type: 'string' },
        'extra-seeds': { type: 'string' },
        'cpu-speed': { type: 'string' },
        'no-older': { type: 'boolean' },
        'no-write': { type: 'boolean' },
      },
    });
  } catch (error) {
    usage((error as Error).message);
  }
  const values = parsed.values;
  const seed = wholeNumber(values.seed, 'seed', 1);
  const sdBuild = (values['sd-build'] ?? 'current') as SdBuild;
  if (sdBuild !== 'current' && sdBuild !== 'older') usage(`--sd-build must be current or older, not ${JSON.stringify(values['sd-build'])}.`);
  const extra = wholeNumber(values['extra-seeds'], 'extra-seeds', 4);
  const cpuSpeed = Number(values['cpu-speed'] ?? 1);
  if (!(cpuSpeed > 0 && cpuSpeed <= 100)) usage(`--cpu-speed must be a number above 0 (1 is the assumed speed), not ${JSON.stringify(values['cpu-speed'])}.`);
  const outDir = resolve(values.out ?? 'docs/bench');

  const started = performance.now();
  const result = await runBenchmark({
    seed,
    sdBuild,
    olderBuild: !values['no-older'],
    otherSeeds: Array.from({ length: extra }, (_, i) => seed + 1 + i),
    cpuSpeed,
    onProgress: (line) => process.stderr.write(`  running ${line}\n`),
  });
  console.log(`VRAM Relay workload benchmark, seed ${seed} (sd.cpp build: ${sdBuild}${cpuSpeed !== 1 ? `, CPU at ${cpuSpeed} times the assumed LLM speed` : ''})`);
  console.log(consoleReport(result));

  const args = [seed !== 1 ? `--seed ${seed}` : '', sdBuild !== 'current' ? `--sd-build ${sdBuild}` : '', cpuSpeed !== 1 ? `--cpu-speed ${cpuSpeed}` : ''].filter(Boolean).join(' ');
  const command = `npm run bench:workload${args ? ` -- ${args}` : ''}`;
  if (!values['no-write']) {
    await mkdir(outDir, { recursive: true });
    await writeAtomically(join(outDir, 'workload.svg'), svgChart(result));
    await writeAtomically(join(outDir, 'workload.md'), markdownReport(result, command, 'workload.svg'));
    console.log(`\nWrote ${join(outDir, 'workload.md')} and ${join(outDir, 'workload.svg')}`);
  }
  console.log(`(simulated in ${((performance.now() - started) / 1000).toFixed(1)} s of real time)`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
