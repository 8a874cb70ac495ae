/**
 * A random-weight SD1.5 checkpoint of the real layout: every tensor name and shape of the ldm UNet, the CLIP-L
 * text encoder and the KL VAE, fp16, as one safetensors file (~2.1 GB). sd.cpp's memory depends on shapes, not on
 * weight values, so its buffers are those of the real model; the image it draws is noise (or blank).
 */

import { open } from 'node:fs/promises';
import { readSafetensorsHeader } from '../../sidecar/models/safetensorsHeader';
import { readImageModelInfo, type ImageModelInfo } from '../../sidecar/models/imageModelInfo';
import { clipTextTensors, klVaeTensors, SD1_UNET, unetTensors, writeSafetensors, type TensorSpec } from '../../test/unit/models/imageCheckpoints';

export function sd15Tensors(): TensorSpec[] {
  return [
    ...unetTensors('model.diffusion_model.', SD1_UNET),
    ...clipTextTensors('cond_stage_model.transformer.text_model.'),
    ...klVaeTensors('first_stage_model.', 4),
  ];
}

/** Random fp16 values of magnitude 2^-7 .. 1 with random signs: no NaN or infinity, whatever the bytes. */
export function randomHalfBlock(bytes: number): Buffer {
  const block = Buffer.alloc(bytes - (bytes % 2));
  let state = 0x9e3779b9;
  for (let i = 0; i < block.length; i += 2) {
    // xorshift32: fast and good enough for weights nobody reads.
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    const r = state >>> 0;
    const sign = r & 0x8000;
    const exponent = 8 + ((r >>> 10) & 0x7); // 8..15 (bias 15): 2^-7 .. 2^0
    const mantissa = r & 0x3ff;
    block.writeUInt16LE(sign | (exponent << 10) | mantissa, i);
  }
  return block;
}

/**
 * Writes the checkpoint: the header (through the test writer, so the layout is the one the readers are tested
 * with), then random data over the whole tensor area. Checks it with the sidecar's own readers.
 */
export async function writeRandomSd15(path: string, onProgress?: (written: number, total: number) => void): Promise<ImageModelInfo> {
  const dataBytes = await writeSafetensors(path, sd15Tensors(), 'F16');
  const handle = await open(path, 'r+');
  try {
    const lengthField = Buffer.alloc(8);
    await handle.read(lengthField, 0, 8, 0);
    const dataStart = 8 + Number(lengthField.readBigUInt64LE(0));
    const block = randomHalfBlock(16 * 1024 * 1024);
    for (let written = 0; written < dataBytes; ) {
      const length = Math.min(block.length, dataBytes - written);
      await handle.write(block, 0, length, dataStart + written);
      written += length;
      onProgress?.(written, dataBytes);
    }
  } finally {
    await handle.close();
  }
  const header = await readSafetensorsHeader(path);
  if (header.tensors.length !== sd15Tensors().length) throw new Error(`${path}: the header lists ${header.tensors.length} tensors, expected ${sd15Tensors().length}`);
  const info = await readImageModelInfo(path);
  if (info.family !== 'sd1') throw new Error(`${path} reads as ${info.family}, not sd1: the tensor layout is wrong`);
  return info;
}
