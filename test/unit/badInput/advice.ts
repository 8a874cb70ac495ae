/** Words that tell the user what to do next: every refusal of a bad request must contain one. */
export const ADVICE = /\b(use|set|give|remove|shorten|split|pick|choose|check|download|make|put|trust|raise)\b/i;
