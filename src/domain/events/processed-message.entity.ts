import { defineEntity, p } from '@mikro-orm/core';

/**
 * The inbox: one row per message a consumer has processed, written in the same transaction as the
 * consumer's effect. A redelivered message (the broker is at-least-once, and so is the outbox relay)
 * finds its row and is acknowledged without a second effect.
 */
export const ProcessedMessageSchema = defineEntity({
  name: 'ProcessedMessage',
  tableName: 'processed_messages',
  properties: {
    // The consumer's name (`payments`): each consumer processes a message once, independently of the others.
    consumer: p.string().length(60).primary(),
    // The message id, the outbox row's id (`evt_…`).
    messageId: p.string().length(64).primary(),
    processedAt: p.datetime().onCreate(() => new Date()),
  },
  indexes: [{ name: 'processed_messages_processed_at_index', properties: ['processedAt'] }],
});

export class ProcessedMessage extends ProcessedMessageSchema.class {}
ProcessedMessageSchema.setClass(ProcessedMessage);
