/* DeepTreeEcho/EchobeatsThreadPoolManager.h: the original include path of
 * DeepTreeEcho::FEchobeatsThreadPoolManager; see ../EchobeatsThreadPoolManager.h. */
#ifndef CLLM_DEEPTREEECHO_ECHOBEATS_THREAD_POOL_MANAGER_H
#define CLLM_DEEPTREEECHO_ECHOBEATS_THREAD_POOL_MANAGER_H

#include "../EchobeatsThreadPoolManager.h"

#endif /* CLLM_DEEPTREEECHO_ECHOBEATS_THREAD_POOL_MANAGER_H */
