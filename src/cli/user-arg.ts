import { Args } from '@oclif/core';

/** The USER argument of the users commands: an id (usr_…) or an email address. */
export const userArg = Args.string({ name: 'user', description: 'User id (usr_…) or email address', required: true });
