import { Injectable } from '@nestjs/common';
import { Queue } from 'jobwire';
import { InjectQueue } from 'jobwire/nestjs';

import {
  MESSAGE_REQUEST_QUEUE, type CreateMessageRequestRequest, type MessageRequestJobName,
  type MessageRequestJobs, type QueueCallOptions, type UserToken,
} from './jobs.js';

/** Adds the service's jobs; the same calls as its BullMQ version, with jobwire's Queue. */
@Injectable()
export class MessageRequestQueueService {
  constructor(
    @InjectQueue(MESSAGE_REQUEST_QUEUE)
    private readonly queue: Queue<MessageRequestJobs[MessageRequestJobName], unknown, MessageRequestJobName>,
  ) {}

  async queueCreateMessageRequest(user: UserToken, request: CreateMessageRequestRequest,
    options: QueueCallOptions = {}): Promise<string> {
    const job = await this.queue.add('create-message-request', {
      user, request, options: { idempotencyKey: options.idempotencyKey },
    }, {
      // An idempotency key makes the add idempotent: the same key gives the same job.
      jobId: options.idempotencyKey ? `create-${options.idempotencyKey}` : undefined,
      delay: options.delay,
      priority: options.priority,
    });
    return job.id;
  }

  async queueSendMessageRequest(messageRequestId: string, tenant: string,
    options: QueueCallOptions = {}): Promise<string> {
    const job = await this.queue.add('send-message-request', { messageRequestId, tenant },
      { delay: options.delay, priority: options.priority });
    return job.id;
  }

  async queueRetryFailedMessageRequest(messageRequestId: string, tenant: string, retryReason: string,
    options: QueueCallOptions = {}): Promise<string> {
    const job = await this.queue.add('retry-failed-message-request',
      { messageRequestId, tenant, retryReason }, { delay: options.delay, priority: options.priority });
    return job.id;
  }

  getQueueInfo(): Promise<Record<string, number>> {
    return this.queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
  }

  getJob(id: string) {
    return this.queue.getJob(id);
  }
}
