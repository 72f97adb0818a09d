// The canvas node of a step, shared by the builder and the live run view.
import { Handle, Position, type Node, type NodeProps } from "@xyflow/react";

export interface StepNodeData extends Record<string, unknown> {
  stepId: string;
  agent: string;
  description: string;
  order?: number;
  status?: string;
  statusLabel?: string;
  progress?: number;
  issue?: string;
}

export type StepFlowNode = Node<StepNodeData, "step">;

export function StepNode({ data, selected }: NodeProps<StepFlowNode>) {
  return (
    <div className={`step-node${selected ? " selected" : ""}${data.status ? ` s-${data.status}` : ""}${data.issue ? " has-issue" : ""}`} data-step={data.stepId} data-status={data.status}>
      <Handle type="target" position={Position.Left} aria-label={`needs: connect into ${data.stepId}`} />
      <div className="step-node-head">
        {data.order !== undefined && <span className="order">{data.order}</span>}
        <strong>{data.stepId}</strong>
        {data.statusLabel && <span className={`badge s-${data.status}`}>{data.statusLabel}</span>}
      </div>
      <div className="step-node-agent">{data.agent || "no agent"}</div>
      <div className="step-node-desc">{data.description.slice(0, 80) || "no description"}</div>
      {data.progress !== undefined && data.progress > 0 && data.progress < 1 && (
        <div className="progress small" role="progressbar" aria-label={`${data.stepId} progress`} aria-valuenow={Math.round(data.progress * 100)} aria-valuemin={0} aria-valuemax={100}>
          <div className="progress-fill" style={{ width: `${Math.round(data.progress * 100)}%` }} />
        </div>
      )}
      {data.issue && <div className="step-node-issue">{data.issue}</div>}
      <Handle type="source" position={Position.Right} aria-label={`from ${data.stepId}: drag to the step that needs it`} />
    </div>
  );
}

export const nodeTypes = { step: StepNode };
