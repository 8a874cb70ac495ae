/**
 * Usage texts of the sd.cpp stand-in, one per emulated release. The layout and the option names follow the real
 * binaries (the grouped `CLI Options:` / `Context Options:` / `Generation Options:` form of sd-cli since 2025, and
 * the single `arguments:` list of the older `sd`); the descriptions are shortened.
 */

const NEW_CLI = `  -o, --output <string>                    path to write result image to. printf-style %d format specifiers
                                           number image sequences (default: ./output.png) (eg. output_%03d.png)
  --output-begin-idx <int>                 starting index for output image sequence (default 0 with %d, 1 otherwise)
  --preview-path <string>                  path to write preview image to (default: ./preview.png)
  -v, --verbose                            print extra info
  --color                                  colors the logging tags according to level
  -M, --mode                               run mode, one of [img_gen, vid_gen, upscale, convert], default: img_gen
  --preview                                preview method, one of [none, proj, tae, vae] (default is none)
  --version                                print the version and exit
  -h, --help                               show this help message and exit`;

const NEW_CONTEXT = `  -m, --model <string>                     path to full model
  --clip_l <string>                        path to the clip-l text encoder
  --clip_g <string>                        path to the clip-g text encoder
  --t5xxl <string>                         path to the t5xxl text encoder
  --llm <string>                           path to the llm text encoder
  --diffusion-model <string>               path to the standalone diffusion model
  --vae <string>                           path to standalone vae model
  --taesd <string>                         path to taesd (tiny autoencoder, fast low quality decoding)
  --control-net <string>                   path to control net model
  --embd-dir <string>                      embeddings directory
  --lora-model-dir <string>                lora model directory
  --backend <string>                       runtime backend assignment, e.g. cpu or te=cpu,vae=cuda0,diffusion=vulkan0
  --params-backend <string>                parameter backend assignment, e.g. disk, cpu, or diffusion=disk,te=cpu
  -t, --threads <int>                      number of threads to use during computation (default: -1)
  --max-vram <float>                       maximum VRAM budget in GiB for graph-cut segmented execution
  --auto-fit <string>                      on|off: pick device placements from the model size and memory budgets
  --stream-layers                          residency and prefetch streaming on top of --max-vram
  --offload-to-cpu                         place the weights in RAM to save VRAM, load them into VRAM when needed
  --mmap                                   whether to memory-map model
  --control-net-cpu                        keep controlnet in cpu (deprecated: --backend controlnet=cpu)
  --clip-on-cpu                            keep clip in cpu (deprecated: --backend te=cpu)
  --vae-on-cpu                             keep vae in cpu (deprecated: --backend vae=cpu)
  --fa                                     use flash attention
  --diffusion-fa                           use flash attention in the diffusion model only
  --diffusion-conv-direct                  use ggml_conv2d_direct in the diffusion model
  --vae-conv-direct                        use ggml_conv2d_direct in the vae model
  --type                                   weight type (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K)
  --rng                                    RNG, one of [std_default, cuda, cpu], default: cuda
  --list-devices                           list available ggml backend devices and exit`;

const NEW_GENERATION = `  -p, --prompt <string>                    the prompt to render
  -n, --negative-prompt <string>           the negative prompt (default: "")
  -i, --init-img <string>                  path to the init image
  -H, --height <int>                       image height, in pixel space (default: 512)
  -W, --width <int>                        image width, in pixel space (default: 512)
  --steps <int>                            number of sample steps (default: 20)
  --clip-skip <int>                        ignore last layers of CLIP network (default: -1)
  -b, --batch-count <int>                  batch count
  --video-frames <int>                     video frames (default: 1)
  --fps <int>                              fps (default: 24)
  --cfg-scale <float>                      unconditional guidance scale: (default: 7.0)
  --guidance <float>                       distilled guidance scale for models with guidance input (default: 3.5)
  --strength <float>                       strength for noising/unnoising (default: 0.75)
  --vae-tile-overlap <float>               tile overlap for vae tiling, in fraction of tile size (default: 0.5)
  --vae-tiling                             process vae in tiles to reduce memory usage
  --temporal-tiling                        decode video latents a few frames at a time
  -s, --seed                               RNG seed (default: 42, use random seed for < 0)
  --sampling-method                        sampling method, one of [euler, euler_a, heun, dpm2, dpm++2s_a, dpm++2m,
                                           dpm++2mv2, ipndm, ipndm_v, lcm, ddim_trailing, tcd] (default: euler_a)
  --scheduler                              denoiser sigma scheduler (default: discrete)
  --vae-tile-size                          tile size for vae tiling, format [X]x[Y] (default: 32x32)`;

export function newReleaseHelp(program: string): string {
  return `usage: ${program} [options]

CLI Options:
${NEW_CLI}

Context Options:
${NEW_CONTEXT}

Generation Options:
${NEW_GENERATION}
`;
}

export function oldReleaseHelp(program: string): string {
  return `usage: ${program} [arguments]

arguments:
  -h, --help                         show this help message and exit
  -M, --mode [MODEL]                 run mode (txt2img or img2img or convert, default: txt2img)
  -t, --threads N                    number of threads to use during computation (default: -1)
                                     If threads <= 0, then threads will be set to the number of CPU physical cores
  -m, --model [MODEL]                path to full model
  --diffusion-model                  path to the standalone diffusion model
  --clip_l                           path to the clip-l text encoder
  --clip_g                           path to the clip-g text encoder
  --t5xxl                            path to the t5xxl text encoder
  --vae [VAE]                        path to vae
  --taesd [TAESD_PATH]               path to taesd. Using Tiny AutoEncoder for fast decoding (low quality)
  --embd-dir [EMBEDDING_PATH]        path to embeddings
  --type [TYPE]                      weight type (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k)
  --lora-model-dir [DIR]             lora model directory
  -o, --output OUTPUT                path to write result image to (default: ./output.png)
  -p, --prompt [PROMPT]              the prompt to render
  -n, --negative-prompt PROMPT       the negative prompt (default: "")
  --cfg-scale SCALE                  unconditional guidance scale: (default: 7.0)
  --strength STRENGTH                strength for noising/unnoising (default: 0.75)
  -H, --height H                     image height, in pixel space (default: 512)
  -W, --width W                      image width, in pixel space (default: 512)
  --sampling-method {euler, euler_a, heun, dpm2, dpm++2s_a, dpm++2m, dpm++2mv2, ipndm, ipndm_v, lcm}
                                     sampling method (default: "euler_a")
  --steps  STEPS                     number of sample steps (default: 20)
  --rng {std_default, cuda}          RNG (default: cuda)
  -s SEED, --seed SEED               RNG seed (default: 42, use random seed for < 0)
  -b, --batch-count COUNT            number of images to generate
  --schedule {discrete, karras, exponential, ays, gits} Denoiser sigma schedule (default: discrete)
  --clip-skip N                      ignore last layers of CLIP network (default: -1)
  --vae-tiling                       process vae in tiles to reduce memory usage
  --vae-on-cpu                       keep vae in cpu (for low vram)
  --clip-on-cpu                      keep clip in cpu (for low vram)
  --diffusion-fa                     use flash attention in the diffusion model (for low vram)
                                     Might lower quality, since it implies converting k and v to f16.
  --control-net-cpu                  keep controlnet in cpu (for low vram)
  --color                            Colors the logging tags according to level
  -v, --verbose                      print extra info
`;
}

export function serverHelp(program: string): string {
  return `usage: ${program} [options]

Server Options:
  -l, --listen-ip <string>                 server listen ip (default: 127.0.0.1)
  --listen-port <int>                      server listen port (default: 1234)
  -v, --verbose                            print extra info
  --color                                  colors the logging tags according to level
  -h, --help                               show this help message and exit

Context Options:
${NEW_CONTEXT}

Default Generation Options:
${NEW_GENERATION}
`;
}
