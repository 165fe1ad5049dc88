/* null_next.c - the least a runtime can do before its first /next: connect
 * to $AWS_LAMBDA_RUNTIME_API and send the request, then wait to be killed.
 * tests/bench/bench.py times it the same way as the bootstrap, so the start-up
 * figure can be read net of what the measuring rig itself costs (fork and
 * exec from Python, the emulator's accept and request parsing). */
#define _DEFAULT_SOURCE
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void)
{
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    char host[256], req[512], buf[4096];
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;

    if (!api || strlen(api) >= sizeof host)
        return 1;
    snprintf(host, sizeof host, "%s", api);
    char *colon = strrchr(host, ':');
    if (!colon)
        return 1;
    *colon = '\0';
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
        return 1;
    int fd = socket(ai->ai_family, ai->ai_socktype, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        return 1;
    int n = snprintf(req, sizeof req,
                     "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: %s\r\n\r\n", api);
    if (write(fd, req, (size_t)n) != n)
        return 1;
    while (read(fd, buf, sizeof buf) > 0)
        ;
    freeaddrinfo(ai);
    close(fd);
    return 0;
}
