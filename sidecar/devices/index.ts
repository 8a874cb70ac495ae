/** Device probes and the simulated device. */
export * from './simulatedDevice';
export * from './selectProbe';
export { NvidiaProbe } from './nvidiaProbe';
export { AmdProbe } from './amdProbe';
export { AppleProbe } from './appleProbe';
export { CpuProbe } from './cpuProbe';
