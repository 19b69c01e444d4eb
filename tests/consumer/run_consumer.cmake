# Installs the project from PROJECT_BINARY into WORK/prefix, then configures, builds and runs the
# consumer project against it with find_package(CompactAttention).
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
file(REMOVE_RECURSE ${WORK})
run(${CMAKE_COMMAND} --install ${PROJECT_BINARY} --prefix ${WORK}/prefix)
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE} -B ${WORK}/build -DCMAKE_PREFIX_PATH=${WORK}/prefix
    -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER} -DCMAKE_CUDA_ARCHITECTURES=80)
run(${CMAKE_COMMAND} --build ${WORK}/build)
run(${WORK}/build/consumer)
