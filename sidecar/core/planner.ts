/**
 * The planner: pure functions from (job, device, residents, costs) to a Plan. See planning/imagePlanner.ts for the
 * memory model and planning/policy.ts for how yields and safer placements are weighed.
 */

export {
  planImageJob,
  scaleImageCosts,
  nextRecoveryRung,
  planSatisfiesRung,
  floorOf,
  type ImagePlanInput,
  type PlannerDevice,
  type PlannerLlm,
  type PlannerImageResident,
  type PlanFloor,
} from './planning/imagePlanner';
export { planLlmJob, llmBytesToHot, type CpuLaneEstimate, type LlmPlanInput } from './planning/llmPlanner';
export { llmFootprint, llmRestoreMs, llmLevel, describeLlmYield } from './planning/llmFootprint';
export { DEFAULT_PLANNER_POLICY, MARGIN_LAST_RESORT_SHARE, type PlannerPolicy } from './planning/policy';
