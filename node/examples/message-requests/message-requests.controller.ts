import { Body, Controller, Get, Headers, NotFoundException, Param, Post } from '@nestjs/common';

import type { CreateMessageRequestRequest, QueueCallOptions } from './jobs.js';
import { MessageRequestQueueService } from './message-request-queue.service.js';

@Controller('message-requests')
export class MessageRequestController {
  constructor(private readonly queueService: MessageRequestQueueService) {}

  /** Enqueue a creation and answer at once with the job id. */
  @Post('async')
  async createAsync(
    @Headers('x-user-id') userId: string | undefined,
    @Headers('x-tenant') tenant: string | undefined,
    @Body() body: CreateMessageRequestRequest & QueueCallOptions,
  ) {
    const { idempotencyKey, delay, priority, ...request } = body;
    const jobId = await this.queueService.queueCreateMessageRequest(
      { id: userId ?? 'anonymous', tenant: tenant ?? 'default' }, request,
      { idempotencyKey, delay, priority });
    return { message: 'Message request queued for processing', jobId };
  }

  @Post(':id/send')
  async send(@Param('id') id: string, @Headers('x-tenant') tenant: string | undefined) {
    const jobId = await this.queueService.queueSendMessageRequest(id, tenant ?? 'default');
    return { message: 'Message sending queued', jobId };
  }

  @Get('stats')
  stats() {
    return this.queueService.getQueueInfo();
  }

  @Get('jobs/:id')
  async job(@Param('id') id: string) {
    const job = await this.queueService.getJob(id);
    if (!job) throw new NotFoundException(`no job ${id}`);
    return { id: job.id, name: job.name, state: job.state, returnvalue: job.returnvalue,
      failedReason: job.failedReason, attemptsMade: job.attemptsMade };
  }
}
