import { Logger } from '@nestjs/common';
import { Job, UnrecoverableError } from 'jobwire';
import { OnWorkerEvent, Processor, WorkerHost } from 'jobwire/nestjs';

import { MESSAGE_REQUEST_QUEUE, type MessageRequestJobs } from './jobs.js';

/** Runs the three job types. Sending is simulated: a text containing "fail" fails. */
@Processor(MESSAGE_REQUEST_QUEUE, { concurrency: 5 })
export class MessageRequestProcessor extends WorkerHost {
  private readonly logger = new Logger(MessageRequestProcessor.name);
  completed = 0;
  failed = 0;

  async process(job: Job): Promise<unknown> {
    switch (job.name) {
      case 'create-message-request':
        return this.handleCreateMessageRequest(job.data as MessageRequestJobs['create-message-request']);
      case 'send-message-request':
        return this.handleSendMessageRequest(job as Job<MessageRequestJobs['send-message-request']>);
      case 'retry-failed-message-request':
        return this.handleRetryFailedMessageRequest(job.data as MessageRequestJobs['retry-failed-message-request']);
      default:
        throw new UnrecoverableError(`unknown job name ${job.name}`);
    }
  }

  private async handleCreateMessageRequest(data: MessageRequestJobs['create-message-request']) {
    if (data.request.text.includes('fail')) throw new Error('message request rejected by validation');
    return { messageRequestId: `mr-${data.user.tenant}-${Date.now()}`, channel: data.request.channel };
  }

  private async handleSendMessageRequest(job: Job<MessageRequestJobs['send-message-request']>) {
    await job.updateProgress(50);
    return { sent: true, messageRequestId: job.data.messageRequestId };
  }

  private async handleRetryFailedMessageRequest(data: MessageRequestJobs['retry-failed-message-request']) {
    return { retried: data.messageRequestId, reason: data.retryReason };
  }

  @OnWorkerEvent('completed')
  onCompleted(job: Job): void {
    this.completed += 1;
    this.logger.debug(`job ${job.id} (${job.name}) completed`);
  }

  @OnWorkerEvent('failed')
  onFailed(job: Job, error: Error): void {
    this.failed += 1;
    this.logger.warn(`job ${job.id} (${job.name}) failed: ${error.message}`);
  }
}
