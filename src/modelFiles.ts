/**
 * Which model files Select Models offers: GGUF for the LLM, safetensors/ckpt/GGUF for the image model. A GGUF can
 * be either, so its name decides the order (image-looking names first for the image list) rather than hiding it.
 */

export type ModelRole = 'llm' | 'image';

const IMAGE_NAME = /(^|[^a-z])(sd|sdxl|sd3|sd15|sd-?1\.?5|sd-?2|flux|wan|stable-?diffusion|unet|dit|chroma|qwen-image|juggernaut|dreamshaper|realvis|pony|illustrious|animagine|lcm|turbo)([^a-z]|$)/i;
const NOT_A_CHECKPOINT = /(^|[^a-z])(vae|clip|t5|t5xxl|text-?encoder|lora|controlnet|embedding|mmproj|taesd|upscale|esrgan)([^a-z]|$)/i;

export const MODEL_EXTENSIONS = ['gguf', 'safetensors', 'ckpt'] as const;

function extensionOf(fileName: string): string {
  const dot = fileName.lastIndexOf('.');
  return dot < 0 ? '' : fileName.slice(dot + 1).toLowerCase();
}

/**
 * How well a file fits a role: 0 = not offered, higher = listed earlier. Auxiliary files (VAE, CLIP, LoRA,
 * mmproj) are not offered as main models.
 */
export function modelFitness(fileName: string, role: ModelRole): number {
  const ext = extensionOf(fileName);
  const base = fileName.split(/[\\/]/).pop() ?? fileName;
  if (NOT_A_CHECKPOINT.test(base)) return 0;
  const imageLike = IMAGE_NAME.test(base);
  if (role === 'llm') {
    if (ext !== 'gguf') return 0;
    return imageLike ? 1 : 2;
  }
  if (ext === 'safetensors' || ext === 'ckpt') return 2;
  if (ext === 'gguf') return imageLike ? 2 : 1;
  return 0;
}

/** The files for a role, best fits first, then by name. */
export function rankModelFiles(paths: readonly string[], role: ModelRole): string[] {
  return paths
    .map((p) => ({ p, fit: modelFitness(p, role) }))
    .filter((x) => x.fit > 0)
    .sort((a, b) => b.fit - a.fit || a.p.localeCompare(b.p))
    .map((x) => x.p);
}
