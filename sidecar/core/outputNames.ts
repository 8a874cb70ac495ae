/**
 * How a run's files are named beside the job's output path. The sidecar renames what sd.cpp wrote to these names,
 * and the extension reserves the same names before a run, so the two must never disagree. Pure.
 */

/**
 * The stem of image `index` (0-based) of a run that produced `count` files: the job's own stem for one image,
 * `stem_1` ... `stem_N` for a batch, `stem_001` ... for video frames.
 */
export function numberedOutputStem(stem: string, index: number, count: number, video = false): string {
  if (count === 1) return stem;
  const number = index + 1;
  return `${stem}_${video ? String(number).padStart(3, '0') : String(number)}`;
}
