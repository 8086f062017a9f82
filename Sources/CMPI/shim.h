#ifndef REC_DIST_CMPI_SHIM_H
#define REC_DIST_CMPI_SHIM_H
#include <mpi.h>

// Open MPI's handles are macros over global structs that Swift cannot import:
// one static inline getter for each handle we use.
static inline MPI_Comm rd_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype rd_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype rd_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype rd_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype rd_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype rd_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype rd_byte(void) { return MPI_BYTE; }
static inline MPI_Op rd_op_sum(void) { return MPI_SUM; }
static inline MPI_Op rd_op_max(void) { return MPI_MAX; }
static inline MPI_Op rd_op_min(void) { return MPI_MIN; }
static inline void *rd_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *rd_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Errhandler rd_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int rd_success(void) { return MPI_SUCCESS; }
static inline int rd_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int rd_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
// For the collective watchdog: nonblocking requests and wildcard receives.
static inline MPI_Request rd_request_null(void) { return MPI_REQUEST_NULL; }
static inline int rd_any_source(void) { return MPI_ANY_SOURCE; }

#endif
