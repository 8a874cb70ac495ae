/**
 * The buttons an error message offers and what each one runs. Pure, so the choice can be tested without VS Code;
 * src/notify.ts shows the message.
 */

export const SHOW_LOGS = 'Show Logs';
export const FIND_ENGINES = 'Find Engines';

/** The command behind each button other than Show Logs (which opens the output channel). */
export const ERROR_ACTIONS: Readonly<Record<string, { command: string; args: readonly unknown[] }>> = {
  'Show Budget Panel': { command: 'vramRelay.showBudgetPanel', args: [] },
  'Restart Sidecar': { command: 'vramRelay.restartSidecar', args: [] },
  'Select Models': { command: 'vramRelay.selectModels', args: [] },
  [FIND_ENGINES]: { command: 'vramRelay.findEngines', args: ['image'] },
};

/**
 * The caller's buttons, then Find Engines when the failure is about the image engine binary (the sidecar's
 * messages for a missing or wrong sd.cpp binary all name its setting), then Show Logs.
 */
export function errorButtons(message: string, extra: readonly string[] = []): string[] {
  const buttons = [...extra];
  if (message.includes('vramRelay.image.binaryPath')) buttons.push(FIND_ENGINES);
  buttons.push(SHOW_LOGS);
  return [...new Set(buttons)];
}
