/**
 * Every constant the estimators use, in one place, each with where it comes from.
 *
 * `memory-facts.md:N` points at a line of the project's reference of published figures
 * (shared/reference/memory-facts.md). Figures marked "assumed" are not published anywhere we rely on: they are
 * rough priors that the calibration store replaces as soon as a worker logs the real value.
 */

import { GiB, MiB } from '../types';

/** `MB` in sd.cpp and llama.cpp logs is bytes / 1024 / 1024. */
export const LOG_MB = MiB;

// ---------------------------------------------------------------------------------------------------------------
// VAE decode (the danger zone)

/**
 * The VAE decode compute buffer is derived from the decoder's shapes, not read off published logs: ggml's graph
 * allocator keeps a tensor until its last consumer has run, so the buffer is the largest set of tensors alive at
 * one step of the decoder (imageEstimator.ts, `vaeDecodeBytesPerPixel`). The published sd.cpp figures are the test
 * data of that derivation (docs/bench/estimator-accuracy.md), never an input.
 *
 * The KL VAE decoder of SD1.x/2/XL, SD3 and Flux (ldm's `Decoder`, sd.cpp's vae.hpp): `conv_in` to 512 channels at
 * latent resolution, a middle block (resnet, single-head attention over every latent pixel, resnet), then four
 * levels of 3 resnets with 128 * [4, 4, 2, 1] channels, each level but the last followed by a 2x nearest upsample
 * and a 3x3 conv. Resnets are norm -> SiLU (in place) -> 3x3 conv, twice, plus a 1x1 shortcut conv when the
 * channel count changes; the block input stays alive for that shortcut.
 */
export interface VaeDecoderShape {
  baseChannels: number;
  /** Channel multiplier per level, full resolution first. */
  channelMult: readonly number[];
  resnetsPerLevel: number;
  kernel: number;
}
export const KL_VAE_DECODER: VaeDecoderShape = { baseChannels: 128, channelMult: [1, 2, 4, 4], resnetsPerLevel: 3, kernel: 3 };

/** sd.cpp runs the VAE and the UNet with f32 activations; im2col writes its matrix in the weights' type (f16 here). */
export const SD_ACTIVATION_BYTES = 4;
export const SD_IM2COL_BYTES = 2;
/** The middle attention block materialises its scores: latent pixels^2 f32 (one head, no flash attention). */
export const VAE_ATTENTION_SCORE_BYTES = 4;

/**
 * How a backend runs the VAE's convolutions when the job does not ask for `--vae-conv-direct`:
 * - `im2col`: ggml_conv_2d, an im2col buffer (C_in * k * k values per output pixel) then a matrix product. The
 *   default of sd.cpp on CUDA, ROCm, Metal and the CPU.
 * - `direct`: ggml_conv_2d_direct, no im2col buffer. sd.cpp's Vulkan builds log the direct-convolution size for a
 *   default run (memory-facts.md:12), so Vulkan is taken as direct; the number itself still comes from the shapes.
 */
export type ConvLowering = 'im2col' | 'direct';
export const VAE_CONV_LOWERING: Record<'cuda' | 'vulkan' | 'rocm' | 'metal' | 'cpu' | 'unknown', ConvLowering> = {
  cuda: 'im2col',
  vulkan: 'direct',
  rocm: 'im2col',
  metal: 'im2col',
  cpu: 'im2col',
  unknown: 'im2col',
};

/**
 * Tiled decode peak: the same derivation for one tile of 32x32 latent pixels (256x256 output pixels), whatever the
 * image size (memory-facts.md:19-20). sd.cpp `--vae-tiling` default: 32x32-latent tiles, overlap 0.5.
 */
export const VAE_TILE_LATENT = 32;
export const VAE_TILE_OVERLAP = 0.5;

/** Spatial downscale of every KL VAE here (SD1.x/2/XL, SD3, Flux, WAN): 8x (the latent is W/8 x H/8). */
export const VAE_SPATIAL_SCALE = 8;
/** WAN's causal video VAE also compresses time 4x: frames = 1 + 4 * (latentFrames - 1) (WAN 2.1 design). */
export const VAE_TEMPORAL_SCALE_WAN = 4;
/** Latent channels: 4 for the SD1.x/2/XL VAE, 16 for the SD3, Flux and WAN 2.1 VAEs. */
export const LATENT_CHANNELS = { sd1: 4, sd2: 4, sdxl: 4, sd3: 16, flux: 16, wan: 16, unknown: 4 } as const;

/** VAE weights alone: about 95 to 160 MB (memory-facts.md:21). */
export const VAE_WEIGHTS_RANGE = { min: 95 * LOG_MB, max: 160 * LOG_MB } as const;

/** ComfyUI's PyTorch VAE decode estimate: 2178 * H_lat * W_lat * 64 * dtype bytes (memory-facts.md:17). */
export const COMFY_VAE_DECODE_FACTOR = 2178 * 64;

// ---------------------------------------------------------------------------------------------------------------
// Diffusion (UNet / DiT) activations

/**
 * The part of the diffusion compute buffer that is linear in latent area: ComfyUI's estimate with efficient
 * attention, `area * dtype_size * 0.01 * factor` MiB, area = H_lat * W_lat (* latent frames for video)
 * (memory-facts.md:25-26). dtype 2 (fp16). sd.cpp runs the conditional and unconditional passes one after the other,
 * so one image is one pass (our assumption: its buffers are sized for batch 1).
 */
export const COMFY_ACTIVATION_MIB_PER_AREA_PER_DTYPE_BYTE = 0.01;
export const ACTIVATION_DTYPE_BYTES = 2;

/**
 * ComfyUI's per-model `memory_usage_factor` (comfy/supported_models.py): sd1 1.0 and sdxl 0.8 (memory-facts.md:26),
 * flux 2.8, sd3 1.2. sd2 shares SD1's UNet layout (1.0); wan 1.0 is assumed. Taken from ComfyUI as they are, not
 * fitted to any sd.cpp log; calibration replaces them.
 */
export const ACTIVATION_FACTOR = { sd1: 1.0, sd2: 1.0, sdxl: 0.8, sd3: 1.2, flux: 2.8, wan: 1.0, unknown: 2.8 } as const;

/**
 * Without flash attention, the attention score matrix is materialised: tokens^2 * heads * 4 bytes (f32 scores in
 * ggml) at the highest-resolution self-attention. This is the "quadratic in tokens" term (memory-facts.md:26-27),
 * and what `--diffusion-fa` saves. Heads and tokens come from the architectures (below); how this compares with
 * the published sd.cpp figures is in docs/bench/estimator-accuracy.md.
 */
export const ATTENTION_SCORE_BYTES = 4;

/**
 * Where each family's largest self-attention sits, from the architectures:
 * - tokensPerLatentPixel: 1 when attention runs at full latent resolution (SD1.x, SD2), 1/4 when it first runs at
 *   half resolution (SDXL has no attention in its first level) or on 2x2 patches (SD3, Flux, WAN).
 * - textTokens: text tokens joined to the image tokens in the same attention (MMDiT): SD3 77 CLIP + 77 T5 = 154;
 *   Flux: 256 T5 tokens (sd.cpp's FluxCLIPEmbedder pads T5 to chunks of 256).
 * - heads: `fixedHeads` (SD1.x: 8), else width * widthMultiplier / headDim, where width is the model's base width
 *   read from its tensors (UNet model channels, DiT hidden size) or `defaultWidth`; SDXL's first attention level
 *   has twice the base channels.
 */
export const ATTENTION_LAYOUT = {
  sd1: { tokensPerLatentPixel: 1, textTokens: 0, fixedHeads: 8, headDim: 40, widthMultiplier: 1, defaultWidth: 320 },
  sd2: { tokensPerLatentPixel: 1, textTokens: 0, fixedHeads: 0, headDim: 64, widthMultiplier: 1, defaultWidth: 320 },
  sdxl: { tokensPerLatentPixel: 1 / 4, textTokens: 0, fixedHeads: 0, headDim: 64, widthMultiplier: 2, defaultWidth: 320 },
  sd3: { tokensPerLatentPixel: 1 / 4, textTokens: 154, fixedHeads: 0, headDim: 64, widthMultiplier: 1, defaultWidth: 1536 },
  flux: { tokensPerLatentPixel: 1 / 4, textTokens: 256, fixedHeads: 0, headDim: 128, widthMultiplier: 1, defaultWidth: 3072 },
  wan: { tokensPerLatentPixel: 1 / 4, textTokens: 0, fixedHeads: 0, headDim: 128, widthMultiplier: 1, defaultWidth: 1536 },
  unknown: { tokensPerLatentPixel: 1 / 4, textTokens: 256, fixedHeads: 0, headDim: 128, widthMultiplier: 1, defaultWidth: 3072 },
} as const;

/**
 * The first two levels of the SD1.x, SD2 and SDXL UNets (ldm's UNetModel, channel_mult [1, 2, ...], 3x3 convs):
 * their largest convolution step, which flash attention does not touch (imageEstimator.ts,
 * `unetConvolutionBytesPerLatentPixel`).
 */
export const UNET_FIRST_LEVELS = { firstLevels: [1, 2], kernel: 3 } as const;

/**
 * sd.cpp logged buffers (memory-facts.md:28), without their case there. gpustack/gguf-parser-go's table of sd.cpp
 * logs has the unet figure as SDXL at 1024x1024 without flash attention (compared in the accuracy table); the flux
 * one is an example line with flash attention, size unknown. Used by tests as plausibility bounds.
 */
export const SDCPP_LOGGED_DIFFUSION_BUFFERS = { unet: 830.86 * LOG_MB, flux: 650 * LOG_MB } as const;

/**
 * Text encoder compute buffers (assumed; no published figure): CLIP encoders work on 77 tokens and need a few MB,
 * T5-XXL / UMT5 on up to 512 tokens need some tens of MB, an LLM text encoder more.
 */
export const TEXT_ENCODER_COMPUTE = {
  sd1: 16 * MiB,
  sd2: 16 * MiB,
  sdxl: 32 * MiB,
  sd3: 160 * MiB,
  flux: 144 * MiB,
  wan: 128 * MiB,
  unknown: 256 * MiB,
} as const;

// ---------------------------------------------------------------------------------------------------------------
// Whole-model figures people quote, for tests and for the benchmark's policies.

/** SD1.5 ~4 GB in use at 512x512: CLIP-L ~235 MB, UNet ~1.7 GB, VAE ~160 MB weights (memory-facts.md:35). */
export const SD15_IN_USE_512 = 4e9;
/** SDXL ~7 GB base weights; Flux.1-dev ~12 GB (memory-facts.md:36). */
export const SDXL_WEIGHTS = 7e9;
export const FLUX_DEV_WEIGHTS = 12e9;
/** KoboldCpp's static reservation for image models (memory-facts.md:37). */
export const KOBOLDCPP_STATIC_RESERVATION = { sdxl: 9 * GiB, sdxlQ8: 7.5 * GiB, sdxlQ4: 6 * GiB, sd15: 4.25 * GiB } as const;
/** sd.cpp `--auto-fit` fixed reservations (memory-facts.md:30-32). */
export const SDCPP_AUTO_FIT = { diffusionExtra: 2048 * MiB, textEncoderExtra: 2048 * MiB, vaeExtra: 1024 * MiB, margin: 512 * MiB } as const;
/** A 7B LLM at Q4_K_M with its KV cache: about 4 to 6 GB (memory-facts.md:38). */
export const LLM_7B_Q4KM_WITH_KV = { min: 4e9, max: 6e9 } as const;

// ---------------------------------------------------------------------------------------------------------------
// LLM (llama.cpp)

/** KV cache element size by cache type: f16 2 bytes; q8_0 34 bytes per 32; q4_0 18 bytes per 32 (ggml block sizes). */
export const KV_BYTES_PER_ELEMENT = { f16: 2, q8_0: 34 / 32, q4_0: 18 / 32 } as const;

/** llama.cpp's default micro-batch (n_ubatch): the compute graph is reserved for this many tokens. */
export const LLAMA_DEFAULT_UBATCH = 512;

/**
 * llama.cpp compute buffer, approximated as the largest set of tensors alive at once in the worst-case graph
 * (n_ubatch tokens, every token an output); the allocator reuses memory between stages, so the buffer is the
 * largest stage, not the sum:
 * - the attention mask, ubatch * n_ctx (f32; f16 with flash attention), lives through every layer;
 * - attention: the mask, the scores ubatch * n_ctx * n_head * 4 bytes (none with flash attention) and 6 hidden-size
 *   (ubatch * n_embd * 4) tensors;
 * - feed-forward: the mask and 4 tensors of ubatch * n_ff * 4 bytes;
 * - output: logits ubatch * n_vocab * 4 bytes and 2 hidden-size tensors.
 * Fitted to llama.cpp's own log (node-llama-cpp 3.22.1 on CPU, `CPU compute buffer size`) for three models written
 * by test/helpers/ggufWriter.ts (256/512/1024 wide, 4/8/16 heads, FFN 512/1024/4096), contexts 256-16384, ubatch
 * 128-512. Without flash attention it logged 13.51, 23.51, 41.51, 41.75, 43.51, 45.01, 74.75, 79.01, 147.01 MiB
 * (estimates 13, 24, 42, 41.5, 43, 46, 75, 80, 148); with it 2.50, 7.01, 8.50, 11.01, 12.01, 16.01, 19.01, 24.01,
 * 36.01, 40.01, 48.01 MiB (estimates 2.5, 8, 8.5, 12, 12, 16, 20, 24, 36, 40, 48). The KV buffers matched exactly.
 * test/integration/llm/llmEstimatorVsLlamaCpp.test.ts repeats the comparison.
 */
export const LLAMA_COMPUTE_HIDDEN_TENSORS = { attention: 6, output: 2 } as const;
export const LLAMA_COMPUTE_FF_TENSORS = 4;
export const LLAMA_COMPUTE_MASK_BYTES = { plain: 4, flash: 2 } as const;

/** Policy figures of other tools (memory-facts.md:48-50,54), for the planner and the benchmark's policies. */
export const OLLAMA_DEVICE_RESERVE = 457 * MiB;
export const LLAMA_SERVER_FIT_TARGET = 1024 * MiB;
export const NODE_LLAMA_CPP_VRAM_PADDING = { fraction: 0.08, max: 1.6 * GiB } as const;
export const COMFY_MIN_INFERENCE_MEMORY = 0.8 * GiB;

// ---------------------------------------------------------------------------------------------------------------
// Time

/**
 * Host-to-device bandwidth for weights still in the page cache: PCIe 4.0 x16 ~25 GB/s, 5.0 ~50 GB/s; a cold read
 * is bounded by the disk, NVMe ~3-7 GB/s (memory-facts.md:67-68). Bytes per millisecond.
 */
export const PCIE4_BYTES_PER_MS = 25e9 / 1000;
export const PCIE5_BYTES_PER_MS = 50e9 / 1000;
export const NVME_BYTES_PER_MS = 3e9 / 1000;

/** Fixed part of an LLM weight reload: creating tensors and backend buffers (assumed). */
export const LLM_RELOAD_OVERHEAD_MS = 300;
/** Recreating a context: allocating KV + compute buffers and reserving the graph (assumed). */
export const LLM_CONTEXT_CREATE_MS = 200;
/** Context creation also clears the KV cache; device memset rate (assumed, conservative). */
export const LLM_KV_CLEAR_BYTES_PER_MS = 100e9 / 1000;
/**
 * Starting the worker process: Node start plus loading node-llama-cpp and its native binding. Importing
 * node-llama-cpp alone took 0.73 s on the 2-core development machine; the binding and device set-up are assumed
 * to take as long again.
 */
export const LLM_PROCESS_START_MS = 1500;

/**
 * GPU sampling time per step per megapixel (per frame for video), on a mid-range GPU (assumed; calibration from the
 * worker's `x.xxs/it` log replaces it). The value includes both classifier-free guidance passes.
 */
export const SAMPLING_MS_PER_STEP_PER_MPX = { sd1: 500, sd2: 600, sdxl: 800, sd3: 1200, flux: 2500, wan: 4000, unknown: 2500 } as const;
/** Default steps when a job does not say (sd.cpp's default is 20). */
export const DEFAULT_STEPS = 20;

/** Text encoding on the GPU, per prompt (assumed). */
export const TEXT_ENCODE_MS = { sd1: 50, sd2: 60, sdxl: 100, sd3: 400, flux: 300, wan: 400, unknown: 500 } as const;
/** Text encoding on the CPU: CLIP is cheap, T5-XXL / LLM encoders take seconds (assumed). */
export const TEXT_ENCODE_CPU_MS = { sd1: 300, sd2: 400, sdxl: 700, sd3: 8000, flux: 7000, wan: 10000, unknown: 10000 } as const;

/** GPU VAE decode time per megapixel (assumed). */
export const VAE_DECODE_GPU_MS_PER_MPX = 600;
/**
 * VAE decode on the CPU: "a few seconds" for 512-1024 px (memory-facts.md:69), modelled as a fixed second plus
 * 2.5 s per megapixel: 1.7 s at 512x512, 3.6 s at 1024x1024, linear in pixels beyond.
 */
export const VAE_DECODE_CPU_FIXED_MS = 1000;
export const VAE_DECODE_CPU_MS_PER_MPX = 2500;
/**
 * Tiling costs extra GPU time (memory-facts.md:69-70: ComfyUI's three passes ~3x, sd.cpp's single pass less).
 * Modelled from the tile geometry: the decode work grows with the area the overlapping tiles cover, plus a fixed
 * launch cost per tile (assumed).
 */
export const VAE_TILE_OVERHEAD_MS = 5;

// ---------------------------------------------------------------------------------------------------------------
// LLM request time (for choosing between waiting for the GPU and answering on the CPU)

/**
 * Generating a token reads every weight once, so generation speed is memory bandwidth / model bytes. Effective
 * bandwidth llama.cpp reaches (assumed): a desktop's dual-channel DDR4/DDR5 has 40-90 GB/s in theory and token
 * generation gets about half; a mid-range GPU about 300 GB/s. What requests really take replaces these
 * (LlmSpeedModel).
 */
export const LLM_GEN_BYTES_PER_MS = { cpu: 25e9 / 1000, gpu: 300e9 / 1000 } as const;
/** Prompt tokens go through in batches, so they are that many times faster than generated ones (assumed). */
export const LLM_PROMPT_SPEEDUP = { cpu: 10, gpu: 40 } as const;
/** Per request: tokenizing, sampling setup, the reply's framing (assumed). */
export const LLM_REQUEST_OVERHEAD_MS = 50;
/** Characters per token of English text and code for common tokenizers (assumed; 3-4.5 in practice). */
export const CHARS_PER_TOKEN = 4;
/** Tokens a request is expected to generate before any has been seen for its task: half its cap, or this. */
export const LLM_DEFAULT_OUTPUT_TOKENS = 128;
